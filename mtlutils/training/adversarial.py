"""The adversarial side of a training: its losses (reversal or domain confusion), extra head-only steps,
periodic re-initialisation, and a weighting wrapper that keeps adversarial terms out of learned weights.

Why the adversarial term stays out of uncertainty weighting (``TrainConfig.adversary_weighting="fixed"``):
Kendall's weight of a classification term settles at 1 / (2 L); the encoder *raises* the adversary's loss
L, so the learned weight falls exactly when the adversary starts to work and damps its own reversed
gradient. A fixed weight 1 with the reversal schedule's lambda keeps the adversarial pressure where the
schedule puts it; ``"learned"`` reproduces paper A's choice for comparison.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F

from mtlutils.balancers import Weighting
from mtlutils.models import AdversaryHead, GuidedNet, confusion_loss

CONFUSION_SUFFIX = "_confusion"


class AdversaryApart(Weighting):
    """``inner`` weighting for the ordinary tasks, a fixed weight (``weights``, default 1) for the terms named
    in ``fixed`` (adversarial tasks and their confusion terms; lambda is applied by the reversal layer or
    the loss)."""

    def __init__(
        self, inner: Weighting, fixed: Collection[str], weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(inner.tasks)
        self.inner = inner
        self.fixed = set(fixed)
        self.weights = {k: float((weights or {}).get(k, 1.0)) for k in self.fixed}
        self.name = inner.name
        self.recommended_lr = inner.recommended_lr

    def _split(self, losses: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
        inner = {k: v for k, v in losses.items() if k not in self.fixed}
        return inner, {k: v for k, v in losses.items() if k in self.fixed}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inner, fixed = self._split(losses)
        out = dict(self.inner(inner)) if inner else {}
        out.update({k: self.weights[k] * v for k, v in fixed.items()})
        return out

    def task_weights(self) -> dict[str, float]:
        weights = dict(self.inner.task_weights())
        weights.update({k: w for k, w in self.weights.items() if not k.endswith(CONFUSION_SUFFIX)})
        return weights

    def log_values(self) -> dict[str, float]:
        values = dict(self.inner.log_values())
        values.update({f"weight.{k}": w for k, w in self.weights.items() if not k.endswith(CONFUSION_SUFFIX)})
        return values

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        self.inner.end_epoch({k: v for k, v in mean_losses.items() if k not in self.fixed})

    def before_update(self, **context) -> None:
        if "losses" in context:
            context["losses"] = self._split(context["losses"])[0]
        for key in ("loss_fn", "train_loss_fn"):  # Auto-Lambda's closures: the inner tasks only
            fn = context.get(key)
            if fn is not None:
                context[key] = lambda module, fn=fn: self._split(fn(module))[0]
        self.inner.before_update(**context)


def label_codes(values: torch.Tensor) -> torch.Tensor:
    """Binary main-task targets (float, NaN missing) as long codes 0/1 with -1 where missing."""
    finite = torch.isfinite(values)
    return torch.where(finite, torch.nan_to_num(values).long(), torch.full_like(values, -1).long())


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over heads; ``logits`` (H, B, K)."""
    return F.cross_entropy(logits.flatten(0, 1), y.repeat(logits.shape[0]))


def _frozen_logits(head: AdversaryHead, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """The head's logits on ``z`` with its weights out of the graph: gradient flows to ``z`` only."""
    params = [p for p in head.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        return head.logits(z, condition, reverse=False)
    finally:
        for p in params:
            p.requires_grad_(True)


def _rows(head: AdversaryHead, y: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Rows with a center (and, for a label-conditional head, with a label)."""
    mask = y >= 0
    return mask & (condition >= 0) if head.config.conditional else mask


def adversary_losses(
    model: GuidedNet,
    shared: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    condition: torch.Tensor,
    strength: float,
) -> dict[str, torch.Tensor]:
    """Per adversarial task: ``name`` -> the head's center cross-entropy (through the reversal layer for
    ``"reversal"``, on detached features for ``"confusion"``), and for confusion ``name_confusion`` ->
    ``strength`` x the cross-entropy to uniform of the head (its weights frozen) on the live features.
    Rows without a center, and for a label-conditional head rows without a label, are left out."""
    losses: dict[str, torch.Tensor] = {}
    for name, head in model.adversaries().items():
        y = targets[name]
        mask = _rows(head, y, condition)
        if not bool(mask.any()):
            continue
        z, y, cond = shared[mask], y[mask], condition[mask]
        if head.config.objective == "reversal":
            losses[name] = _ce(head.logits(z, cond), y)
            continue
        losses[name] = _ce(head.logits(z.detach(), cond, reverse=False), y)
        losses[name + CONFUSION_SUFFIX] = strength * confusion_loss(_frozen_logits(head, z, cond))
    return losses


def adversary_steps(
    model: GuidedNet,
    optimizer: torch.optim.Optimizer,
    shared: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    condition: torch.Tensor,
    steps: int,
) -> None:
    """``steps`` extra updates of the adversarial heads only, on the batch's detached features (the other
    parameters get no gradient, so the optimizer leaves them alone)."""
    z = shared.detach()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        terms = []
        for name, head in model.adversaries().items():
            y = targets[name]
            mask = _rows(head, y, condition)
            if bool(mask.any()):
                terms.append(_ce(head.logits(z[mask], condition[mask], reverse=False), y[mask]))
        if not terms:
            return
        torch.stack(terms).sum().backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def reset_adversaries(model: GuidedNet, optimizer: torch.optim.Optimizer) -> None:
    """Re-initialise every adversarial head and forget its optimizer state (Adam moments)."""
    for head in model.adversaries().values():
        head.reset()
        for param in head.parameters():
            optimizer.state.pop(param, None)


def adversary_parameters(model: GuidedNet) -> list[torch.nn.Parameter]:
    """Parameters of the adversarial heads (their own optimizer group: ``TrainConfig.adversary_lr``)."""
    heads: list[AdversaryHead] = list(model.adversaries().values())
    return [p for h in heads for p in h.parameters() if p.requires_grad]
