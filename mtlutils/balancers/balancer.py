"""A weighting and a gradient method composed, with the per-epoch log of weights, losses and cosines."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from mtlutils.balancers.base import GradientMethod, Weighting


class Balancer(nn.Module):
    """``balancer.backward(losses, shared, exclude, features)``: weight the losses, fill the gradients.

    Its parameters (e.g. the uncertainty log-variances) go into the optimizer without weight decay
    (see :func:`mtlutils.training.make_optimizer`), ideally at ``recommended_lr``. ``log_values()``
    returns the weighting's values (``weight.<task>``, ...) plus, averaged over the steps since the
    previous call (one call per epoch), ``loss.<task>`` (unweighted) and ``cos.<a>.<b>`` (cosine of
    the task gradients on the shared parameters, or on the embedding at representation level; logged
    by every aggregating method, and by ``none`` only with ``cosine_every``).
    """

    def __init__(self, weighting: Weighting, gradient: GradientMethod) -> None:
        super().__init__()
        self.weighting = weighting
        self.gradient = gradient
        self._reset_stats()

    @property
    def name(self) -> str:
        prefix = "rep:" if getattr(self.gradient, "level", "parameter") == "representation" else ""
        return f"{self.weighting.name}+{prefix}{self.gradient.name}"

    @property
    def recommended_lr(self) -> float | None:
        """Learning rate for the balancer's parameter group (None: use the model's)."""
        return self.weighting.recommended_lr

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
        features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weight ``losses``, fill the gradients, return (total weighted loss, weighted terms)."""
        weighted = self.weighting(losses)
        total = self.gradient.backward(weighted, shared, exclude, features=features)
        self._record(losses)
        return total, {k: v.detach() for k, v in weighted.items()}

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted objective without any backward pass (validation loss)."""
        weighted = self.weighting(losses)
        return torch.stack([weighted[name] for name in sorted(weighted)]).sum()

    def log_values(self) -> dict[str, float]:
        values = self.weighting.log_values()
        for name, (total, count) in sorted(self._loss_sums.items()):
            values[f"loss.{name}"] = float(total) / count
        for (a, b), (total, count) in sorted(self._cos_sums.items()):
            values[f"cos.{a}.{b}"] = float(total) / count
        self._reset_stats()
        return values

    def _reset_stats(self) -> None:
        self._loss_sums: dict[str, tuple[torch.Tensor, int]] = {}
        self._cos_sums: dict[tuple[str, str], tuple[torch.Tensor, int]] = {}

    def _record(self, losses: Mapping[str, torch.Tensor]) -> None:
        """Accumulate on the device (no synchronisation until ``log_values``)."""
        for name, value in losses.items():
            total, count = self._loss_sums.get(name, (0.0, 0))
            self._loss_sums[name] = (total + value.detach(), count + 1)
        cosine, tasks = self.gradient.last_cosine, self.gradient.last_cosine_tasks
        if cosine is None:
            return
        for i, a in enumerate(tasks):
            for j in range(i + 1, len(tasks)):
                total, count = self._cos_sums.get((a, tasks[j]), (0.0, 0))
                self._cos_sums[(a, tasks[j])] = (total + cosine[i, j], count + 1)
        self.gradient.last_cosine = None
