"""The two halves of a balancer: a :class:`Weighting` of the task losses and a :class:`GradientMethod`."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from mtlutils.models import TaskSpec

REGRESSION_KINDS = {"regression"}


class Weighting(nn.Module):
    """Maps per-task losses ``{name: scalar}`` to weighted terms ``{name: scalar}`` (to be summed).

    A task absent from ``losses`` (e.g. all its targets missing in this batch) is simply left out.
    ``recommended_lr`` is the learning rate its learnable parameters need (None: no parameters, or the
    model's own learning rate is fine).
    """

    name = "weighting"
    recommended_lr: float | None = None

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__()
        self.tasks = dict(tasks)

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def task_weights(self) -> dict[str, float]:
        """Current multiplier of each task's loss (for the per-epoch log)."""
        raise NotImplementedError  # pragma: no cover

    def log_values(self) -> dict[str, float]:
        """Everything worth logging each epoch, as ``{"weight.<task>": ...}`` plus method extras."""
        return {f"weight.{k}": v for k, v in self.task_weights().items()}

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Hook called once per epoch with the epoch-mean *unweighted* training loss of each task (DWA)."""

    def before_update(self, **context) -> None:
        """Hook called before each backward pass, after ``optimizer.zero_grad()``.

        The training loop passes ``model``, ``losses`` (this batch's task losses, graph attached) and,
        for weightings that need them (Auto-Lambda), ``optimizer``, ``loss_fn(module) -> losses`` on a
        second ("validation") batch and ``train_loss_fn(module) -> losses`` on this batch. A weighting
        ignores every keyword it does not use.
        """

    def _check(self, losses: Mapping[str, torch.Tensor]) -> None:
        unknown = set(losses) - set(self.tasks)
        if unknown:
            raise ValueError(
                f"losses for unknown tasks {sorted(unknown)}; this weighting knows {sorted(self.tasks)}"
            )


class GradientMethod:
    """Turns weighted task losses into ``.grad`` of all parameters (shared ones possibly aggregated).

    ``backward(weighted, shared, exclude, features)`` must leave every parameter's ``.grad`` ready for the
    optimizer and return the summed weighted loss (detached, for logging). Heads and weighting
    parameters get their own gradients; a method that aggregates per-task gradients (PCGrad, CAGrad, ...)
    replaces the shared parameters' gradients with its aggregate of the non-excluded tasks, then adds the
    excluded (adversarial) tasks' gradients unchanged. ``last_cosine`` holds the (m, m) cosine matrix of
    the last step's task gradients (None when not computed) for ``last_cosine_tasks``.
    """

    name = "gradient"
    level = "parameter"

    def __init__(self) -> None:
        self.last_cosine: torch.Tensor | None = None
        self.last_cosine_tasks: tuple[str, ...] = ()

    def backward(
        self,
        weighted: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def summed(weighted: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """sum of the weighted terms in sorted task order; raises on an empty batch or a non-finite total."""
    if not weighted:
        raise ValueError("no task losses in this batch (every target missing?)")
    total = torch.stack([weighted[name] for name in sorted(weighted)]).sum()
    if not math.isfinite(float(total.detach())):
        bad = sorted(k for k, v in weighted.items() if not math.isfinite(float(v.detach())))
        raise FloatingPointError(f"non-finite weighted loss for tasks {bad}; lower the learning rate?")
    return total
