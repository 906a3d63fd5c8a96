"""Dynamic Weight Average (Liu, Johns & Davison 2019): task weights from the epoch-mean loss trend."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from mtlutils.balancers.base import Weighting
from mtlutils.models import TaskSpec


class DWAWeighting(Weighting):
    """lambda_k(t) = m * softmax_k(w / T), w_k = Lbar_k(t-1) / Lbar_k(t-2), T = ``temperature`` (2).

    Lbar_k(t) is the epoch-mean *unweighted* training loss of task k, handed over by ``end_epoch`` (one
    history per task: never another task's loss). lambda = 1 until two epochs are recorded. A task
    missing from one of the last two epochs keeps lambda = 1 and the others share m' = (number of tasks
    with a full history) by the softmax. Adversarial tasks are weighted like any other.
    """

    name = "dwa"

    def __init__(self, tasks: Mapping[str, TaskSpec], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []
        self.weights = {name: 1.0 for name in sorted(tasks)}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(losses)
        return {name: self.weights[name] * losses[name] for name in sorted(losses)}

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Record this epoch's mean losses and set the weights for the next epoch."""
        self._check(mean_losses)
        bad = {k: v for k, v in mean_losses.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"DWA needs finite positive epoch-mean losses, got {bad}")
        self.history.append({k: float(v) for k, v in mean_losses.items()})
        self.weights = self.weights_from(self.history[-2:])

    def weights_from(self, last_two: list[dict[str, float]]) -> dict[str, float]:
        """The weights that follow epochs ``last_two = [t-2, t-1]`` (all 1 with fewer than 2 epochs)."""
        weights = {name: 1.0 for name in sorted(self.tasks)}
        if len(last_two) < 2:
            return weights
        before, last = last_two
        full = [name for name in sorted(self.tasks) if name in before and name in last]
        if not full:
            return weights
        ratios = torch.tensor([last[n] / before[n] for n in full], dtype=torch.float64)
        soft = torch.softmax(ratios / self.temperature, dim=0) * len(full)
        weights.update({n: float(v) for n, v in zip(full, soft)})
        return weights

    def task_weights(self) -> dict[str, float]:
        return dict(self.weights)

    def get_extra_state(self) -> dict:
        return {"history": self.history, "weights": self.weights}

    def set_extra_state(self, state: dict) -> None:
        self.history = [dict(h) for h in state["history"]]
        self.weights = dict(state["weights"])
