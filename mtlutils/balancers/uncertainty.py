"""Kendall, Gal & Cipolla (2018) homoscedastic-uncertainty weighting with learned s = log sigma^2."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from mtlutils.balancers.base import REGRESSION_KINDS, Weighting
from mtlutils.models import TaskSpec


class UncertaintyWeighting(Weighting):
    """One learned s = log sigma^2 per task (init ``init_log_var``, default 0):

    classification (binary, adversarial-class): e^(-s) L + s/2,     stationary at s* = log(2 L)
    regression:                                 e^(-s) L / 2 + s/2,  stationary at s* = log(L)
    (d/ds = -e^(-s) L + 1/2, resp. -e^(-s) L / 2 + 1/2). At s* both forms weight L by 1 / (2 L): the
    method normalises every loss to the same scale. s drifts to -inf when a loss goes to 0. (The public
    code of paper A used e^(-s) L + s for its domain term, stationary at s* = log L; we use s/2 everywhere.)

    The s must be optimised (they are ``parameters()``) and never weight-decayed. At the model's learning
    rate (e.g. AdamW 2e-3) s moves ~0.002 per step and stays near its start for a whole short training;
    ``recommended_lr`` = 0.05 (Adam/AdamW; s then moves up to ~0.05 per step) reaches s* from s = 0 for
    any L in [0.01, 10] within 300 steps to |s - s*| < 0.05 (tests/test_balancers_weightings.py).
    """

    name = "uncert"
    recommended_lr = 0.05

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

    def stationary_log_var(self, name: str, loss: float) -> float:
        """s* minimising the term of task ``name`` for a fixed loss value ``loss`` (> 0)."""
        return math.log(2.0 * self.scale[name] * loss)

    def task_weights(self) -> dict[str, float]:
        return {name: self.scale[name] * math.exp(-float(s.detach())) for name, s in self.log_vars.items()}

    def log_values(self) -> dict[str, float]:
        values = super().log_values()
        values.update({f"log_var.{name}": float(s.detach()) for name, s in self.log_vars.items()})
        return values
