"""Fixed task weights: sum_i lambda_i * L_i (paper A's "vanilla" with every lambda_i = 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from mtlutils.balancers.base import Weighting
from mtlutils.models import TaskSpec


class NaiveWeighting(Weighting):
    """sum_i lambda_i * L_i with fixed lambda_i (default 1).

    A *sum*, not a mean: adding tasks raises the effective learning rate of the shared layers.
    """

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
