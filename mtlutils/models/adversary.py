"""Adversary heads for an undesired concept (the acquisition center): linear or MLP, one or several, optionally
conditioned on the tumour label, with the two objectives the encoder can be trained on.

Objectives (``AdversaryConfig.objective``)
    ``"reversal"``   paper A / DANN: the head minimises the cross-entropy of the center; a gradient reversal
                     layer hands the encoder -lambda x that gradient, so the encoder *maximises* it. The
                     encoder wins by making the head confidently *wrong* (below chance), which keeps the
                     centers apart for any fresh probe.
    ``"confusion"``  domain confusion (Tzeng et al. 2015): the head still minimises the center cross-entropy
                     on *detached* features, while the encoder minimises lambda x the cross-entropy of the
                     head's prediction to the *uniform* distribution; its optimum is a head that cannot
                     tell centers apart, not one that is fooled.

Capacity: ``kind="linear"`` (paper A) or ``"mlp"`` (one hidden ReLU layer of ``hidden`` units), ``n_heads``
independent heads (losses averaged: the encoder must hide the center from all of them), re-initialised
by :meth:`AdversaryHead.reset` (the training loop does it every ``TrainConfig.adversary_reset_every`` epochs).
``conditional=True``: one classifier per tumour class (``n_conditions`` = 2), each row scored by the one
of its *label*; since center and label are confounded, an unconditional adversary would also push the
label out of the features, a conditional one only the center information *given* the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtlutils.models.reversal import GradientReversal

OBJECTIVES = ("reversal", "confusion")
ADVERSARY_KINDS = ("linear", "mlp")


@dataclass(frozen=True)
class AdversaryConfig:
    """Architecture and objective of every adversarial head (see the module docstring)."""

    objective: str = "reversal"
    kind: str = "linear"
    hidden: int = 64  # units of the MLP's hidden layer
    n_heads: int = 1
    conditional: bool = False  # one classifier per class of the main (binary) task

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"adversary objective {self.objective!r} is not one of {OBJECTIVES}")
        if self.kind not in ADVERSARY_KINDS:
            raise ValueError(f"adversary kind {self.kind!r} is not one of {ADVERSARY_KINDS}")
        if self.n_heads < 1 or self.hidden < 1:
            raise ValueError(f"n_heads and hidden must be >= 1, got {self.n_heads}, {self.hidden}")

    @property
    def label(self) -> str:
        """Short description, e.g. 'reversal, 3 x mlp, label-conditional'."""
        heads = f"{self.n_heads} x {self.kind}" if self.n_heads > 1 else self.kind
        return f"{self.objective}, {heads}" + (", label-conditional" if self.conditional else "")


def _classifier(width: int, n_out: int, config: AdversaryConfig) -> nn.Module:
    if config.kind == "linear":
        return nn.Linear(width, n_out)
    return nn.Sequential(nn.Linear(width, config.hidden), nn.ReLU(), nn.Linear(config.hidden, n_out))


class AdversaryHead(nn.Module):
    """``n_heads`` center classifiers behind one gradient reversal layer (active for ``"reversal"`` only).

    ``logits(z, condition)`` gives (n_heads, B, K); ``forward`` the mean over heads (B, K), the head's own
    prediction. ``condition``: (B,) codes 0/1 of the tumour label (-1 or None: averaged over conditions).
    """

    def __init__(self, width: int, n_classes: int, config: AdversaryConfig | None = None) -> None:
        super().__init__()
        self.config = config or AdversaryConfig()
        self.n_classes = int(n_classes)
        self.n_conditions = 2 if self.config.conditional else 1
        self.reversal = GradientReversal()
        out = self.n_classes * self.n_conditions
        self.classifiers = nn.ModuleList(
            _classifier(width, out, self.config) for _ in range(self.config.n_heads)
        )

    def reset(self) -> None:
        """Fresh random weights for every classifier (a new adversary the encoder has not fooled yet)."""
        for module in self.classifiers.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def logits(
        self, z: torch.Tensor, condition: torch.Tensor | None = None, reverse: bool = True
    ) -> torch.Tensor:
        """(n_heads, B, K) logits; through the reversal layer when ``reverse`` and the objective is reversal."""
        if reverse and self.config.objective == "reversal":
            z = self.reversal(z)
        raw = torch.stack([c(z) for c in self.classifiers])  # (H, B, C*K)
        raw = raw.view(raw.shape[0], raw.shape[1], self.n_conditions, self.n_classes)
        if self.n_conditions == 1:
            return raw[:, :, 0]
        if condition is None:
            return raw.mean(2)
        cond = condition.long().clamp(min=0).view(1, -1, 1, 1).expand(raw.shape[0], -1, 1, self.n_classes)
        picked = raw.gather(2, cond).squeeze(2)
        return torch.where((condition >= 0).view(1, -1, 1), picked, raw.mean(2))

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(z, condition).mean(0)


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of softmax(``logits``) (..., K) to the uniform distribution, averaged: log K at best."""
    return -F.log_softmax(logits, dim=-1).mean()
