"""Loss balancers for multi-task training: a *weighting* scales task losses, a *gradient method* turns the
weighted losses into gradients of the shared parameters.

The combination rule (torchjd-like, and the one paper B's 16 balancers follow): the weighting scales
the losses; the gradient method then acts on the per-task gradients of the *weighted* losses, on the
shared parameters only; heads keep their own gradients. Adversarial tasks (behind a gradient reversal
layer) are handed to the gradient method as ``exclude``: a conflict-resolving method must add their
gradient *after* aggregation instead of projecting it away.

Implemented now (paper A):
    weightings  ``"naive"`` (alias ``"vanilla"``): sum_i lambda_i * L_i, fixed lambda_i (default 1; a *sum*,
                so adding tasks raises the effective learning rate of the shared layers);
                ``"uncert"`` (alias ``"uncertainty"``): Kendall et al. 2018 with s_i = log sigma_i^2,
                classification tasks (binary, adversarial-class) e^(-s) L + s/2, regression tasks
                1/2 e^(-s) L + s/2; s_i start at 0 and are learned (optimizer, no weight decay).
    gradients   ``"none"``: backpropagate the sum of the weighted losses.
Planned for paper B (names reserved, extension points below): weightings ``dwa``, ``autol``;
gradient methods ``graddrop``, ``pcgrad``, ``cagrad``.

Extension points
    * a new weighting subclasses :class:`Weighting` (``forward``; optional ``end_epoch`` for DWA's
      per-epoch loss history, ``before_update`` for Auto-Lambda's meta step) and registers in
      :data:`WEIGHTINGS`;
    * a new gradient method subclasses :class:`GradientMethod` (``backward``) and registers in
      :data:`GRADIENT_METHODS`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from mtlutils.models import TaskSpec, parse_tasks

REGRESSION_KINDS = {"regression"}


class Weighting(nn.Module):
    """Maps per-task losses ``{name: scalar}`` to weighted terms ``{name: scalar}`` (to be summed).

    A task absent from ``losses`` (e.g. all its targets missing in this batch) is simply left out.
    """

    name = "weighting"

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
        """Hook called before each optimizer step (Auto-Lambda's virtual step would live here)."""

    def _check(self, losses: Mapping[str, torch.Tensor]) -> None:
        unknown = set(losses) - set(self.tasks)
        if unknown:
            raise ValueError(
                f"losses for unknown tasks {sorted(unknown)}; this weighting knows {sorted(self.tasks)}"
            )


class NaiveWeighting(Weighting):
    """sum_i lambda_i * L_i with fixed lambda_i (paper A's "vanilla": every lambda_i = 1)."""

    name = "naive"

    def __init__(self, tasks: Mapping[str, TaskSpec], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = set(weights) - set(tasks)
        if unknown:
            raise ValueError(f"weights given for unknown tasks {sorted(unknown)}; tasks are {sorted(tasks)}")
        bad = {k: v for k, v in weights.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"task weights must be finite and >= 0, got {bad}")
        self.weights = {name: float(weights.get(name, 1.0)) for name in sorted(tasks)}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(losses)
        return {name: self.weights[name] * losses[name] for name in sorted(losses)}

    def task_weights(self) -> dict[str, float]:
        return dict(self.weights)


class UncertaintyWeighting(Weighting):
    """Kendall, Gal & Cipolla (2018) homoscedastic-uncertainty weighting, s = log sigma^2 per task.

    classification (binary, adversarial-class): e^(-s) * L + s / 2
    regression:                                 e^(-s) * L / 2 + s / 2
    (the public code of paper A used e^(-s) L + s for its domain term; we use s/2 everywhere).
    """

    name = "uncert"

    def __init__(self, tasks: Mapping[str, TaskSpec], init_log_var: float = 0.0) -> None:
        super().__init__(tasks)
        self.log_vars = nn.ParameterDict(
            {name: nn.Parameter(torch.tensor(float(init_log_var))) for name in sorted(tasks)}
        )
        self.scale = {
            name: 0.5 if spec.kind in REGRESSION_KINDS else 1.0 for name, spec in self.tasks.items()
        }

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(losses)
        out = {}
        for name in sorted(losses):
            s = self.log_vars[name]
            out[name] = self.scale[name] * torch.exp(-s) * losses[name] + 0.5 * s
        return out

    def task_weights(self) -> dict[str, float]:
        return {name: self.scale[name] * math.exp(-float(s.detach())) for name, s in self.log_vars.items()}

    def log_values(self) -> dict[str, float]:
        values = super().log_values()
        values.update({f"log_var.{name}": float(s.detach()) for name, s in self.log_vars.items()})
        return values


class GradientMethod:
    """Turns weighted task losses into ``.grad`` of all parameters (shared ones possibly aggregated).

    ``backward(weighted, shared, exclude)`` must leave every parameter's ``.grad`` ready for the
    optimizer and return the summed weighted loss (for logging). Heads and weighting parameters get
    their own gradients (e.g. from ``sum(weighted).backward()``); a method that aggregates per-task
    gradients (PCGrad, CAGrad, ...) replaces the shared parameters' gradients with its aggregate of the
    non-excluded tasks, then adds the excluded (adversarial) tasks' gradients unchanged.
    """

    name = "gradient"

    def backward(
        self,
        weighted: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class SumGradients(GradientMethod):
    """No gradient surgery: backpropagate sum_i weighted_i."""

    name = "none"

    def backward(
        self,
        weighted: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
    ) -> torch.Tensor:
        if not weighted:
            raise ValueError("no task losses in this batch (every target missing?)")
        total = torch.stack([weighted[name] for name in sorted(weighted)]).sum()
        total.backward()
        return total.detach()


WEIGHTINGS: dict[str, type[Weighting]] = {
    "naive": NaiveWeighting,
    "vanilla": NaiveWeighting,
    "uncert": UncertaintyWeighting,
    "uncertainty": UncertaintyWeighting,
}
GRADIENT_METHODS: dict[str, type[GradientMethod]] = {"none": SumGradients}
PLANNED_WEIGHTINGS = ("dwa", "autol")
PLANNED_GRADIENT_METHODS = ("graddrop", "pcgrad", "cagrad")


class Balancer(nn.Module):
    """A weighting and a gradient method used together: ``balancer.backward(losses, shared, exclude)``.

    Its parameters (e.g. the uncertainty log-variances) go into the optimizer without weight decay
    (see :func:`mtlutils.training.make_optimizer`).
    """

    def __init__(self, weighting: Weighting, gradient: GradientMethod) -> None:
        super().__init__()
        self.weighting = weighting
        self.gradient = gradient

    @property
    def name(self) -> str:
        return f"{self.weighting.name}+{self.gradient.name}"

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weight ``losses``, fill the gradients, return (total weighted loss, weighted terms)."""
        weighted = self.weighting(losses)
        total = self.gradient.backward(weighted, shared, exclude)
        return total, {k: v.detach() for k, v in weighted.items()}

    def weighted_total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted objective without any backward pass (validation loss)."""
        weighted = self.weighting(losses)
        return torch.stack([weighted[name] for name in sorted(weighted)]).sum()

    def log_values(self) -> dict[str, float]:
        return self.weighting.log_values()


def make_balancer(
    weighting: str = "naive",
    gradient: str = "none",
    tasks: Mapping[str, str | TaskSpec] | None = None,
    **options,
) -> Balancer:
    """Build a :class:`Balancer` by names, e.g. ``make_balancer("uncert", "none", tasks)``.

    ``options`` go to the weighting (``weights={...}`` for naive, ``init_log_var=`` for uncert).
    """
    if tasks is None:
        raise ValueError("make_balancer needs the tasks, e.g. {'tumour': 'binary', 'count': 'regression'}")
    specs = parse_tasks(tasks)
    if weighting not in WEIGHTINGS:
        planned = " (planned, not implemented yet)" if weighting in PLANNED_WEIGHTINGS else ""
        raise ValueError(f"weighting {weighting!r}{planned} is not one of {sorted(WEIGHTINGS)}")
    if gradient not in GRADIENT_METHODS:
        planned = " (planned, not implemented yet)" if gradient in PLANNED_GRADIENT_METHODS else ""
        raise ValueError(f"gradient method {gradient!r}{planned} is not one of {sorted(GRADIENT_METHODS)}")
    return Balancer(WEIGHTINGS[weighting](specs, **options), GRADIENT_METHODS[gradient]())
