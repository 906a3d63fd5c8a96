"""Gradient reversal (Ganin et al. 2016): the layer, its function and the schedule of its strength lambda."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:  # type: ignore[override]
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-strength`` in the backward pass."""
    return _ReverseGradient.apply(x, float(strength))


class GradientReversal(nn.Module):
    """Gradient reversal layer (Ganin et al. 2016). ``strength`` (lambda >= 0) is set by the schedule."""

    def __init__(self, strength: float = 1.0) -> None:
        super().__init__()
        self.strength = float(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}"


PLATEAU = 0.95  # share of the final lambda from which the DANN ramp counts as reached


@dataclass(frozen=True)
class ReversalSchedule:
    """Strength lambda of the gradient reversal over training.

    ``kind="constant"``: lambda = ``strength`` throughout.
    ``kind="dann"``: lambda = strength * (2 / (1 + exp(-10 p)) - 1), p = training progress in [0, 1].
    ``kind="two-phase"``: lambda = 0 before ``switch_epoch`` and ``strength`` from it on (the original
    code's schedule; learned loss weights are *not* reset at the switch, and only epochs after the
    switch may become the restored "best" checkpoint).
    """

    kind: str = "constant"
    strength: float = 1.0
    switch_epoch: int = 0

    def __post_init__(self) -> None:
        if self.kind not in {"constant", "dann", "two-phase"}:
            raise ValueError(f"reversal schedule {self.kind!r} is not 'constant', 'dann' or 'two-phase'")
        if self.strength < 0:
            raise ValueError(
                f"reversal strength must be >= 0 (it is negated inside the layer), got {self.strength}"
            )

    def __call__(self, epoch_progress: float, n_epochs: int) -> float:
        """lambda at ``epoch_progress`` (epochs done, fractional) out of ``n_epochs``."""
        if self.kind == "constant":
            return self.strength
        if self.kind == "dann":
            p = min(max(epoch_progress / max(n_epochs, 1), 0.0), 1.0)
            return self.strength * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
        return self.strength if epoch_progress >= self.switch_epoch else 0.0

    def first_full_epoch(self, n_epochs: int | None = None, plateau: float = PLATEAU) -> int:
        """First epoch whose checkpoint may be restored: the switch of a two-phase schedule; for the DANN
        ramp the first epoch that *starts* with lambda >= ``plateau`` x strength (epoch 6 of 15 for 0.95:
        p >= ln((1 + plateau) / (1 - plateau)) / 10 = 0.366); 0 for a constant lambda (or DANN without
        ``n_epochs``)."""
        if self.kind == "two-phase":
            return self.switch_epoch
        if self.kind == "dann" and n_epochs is not None and self.strength > 0:
            p = math.log((1.0 + plateau) / (1.0 - plateau)) / 10.0
            return min(int(math.ceil(p * n_epochs - 1e-9)), max(n_epochs - 1, 0))
        return 0
