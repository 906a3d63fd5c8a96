"""All 16 balancers of paper B (+ torchjd's aggregators, representation level) train a tiny shared model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlutils.balancers import PAPER_B_GRADIENTS, PAPER_B_WEIGHTINGS, TORCHJD_NAMES, make_balancer
from mtlutils.models import GradientReversal, TaskSpec, parse_tasks

TASKS = parse_tasks({"tumour": "binary", "count": "regression"})
ADV_TASKS = parse_tasks(
    {"tumour": "binary", "count": "regression", "center": TaskSpec("center", "adversarial-class", 3)}
)


class TwoHeads(nn.Module):
    """Shared trunk 6 -> 8 -> 8, one linear head per task (adversarial ones behind a reversal layer)."""

    def __init__(self, tasks) -> None:
        super().__init__()
        self.tasks = tasks
        self.trunk = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.heads = nn.ModuleDict(
            {
                n: nn.Sequential(GradientReversal(), nn.Linear(8, s.out_features))
                if s.is_adversarial
                else nn.Linear(8, 1)
                for n, s in tasks.items()
            }
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def forward(self, x: torch.Tensor, return_features: bool = False):
        z = self.trunk(x)
        out = {n: h(z) if self.tasks[n].is_adversarial else h(z).squeeze(1) for n, h in self.heads.items()}
        return (out, z) if return_features else out


def make_data(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = {
        "tumour": (x[:, 0] > 0).float(),
        "count": x[:, 1] + 0.1 * torch.randn(n, generator=g),
        "center": torch.randint(0, 3, (n,), generator=g),
    }
    return x, y


def losses_of(out, y, tasks) -> dict[str, torch.Tensor]:
    fns = {
        "binary": nn.functional.binary_cross_entropy_with_logits,
        "regression": nn.functional.mse_loss,
        "adversarial-class": nn.functional.cross_entropy,
    }
    return {n: fns[s.kind](out[n], y[n]) for n, s in tasks.items()}


def train(weighting: str, gradient: str, tasks, steps: int = 4, level: str = "parameter", **options):
    torch.manual_seed(0)
    model = TwoHeads(tasks)
    balancer = make_balancer(weighting, gradient, tasks, level=level, **options)
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters()}, {"params": list(balancer.parameters()), "weight_decay": 0.0}],
        lr=0.01,
    )
    x, y = make_data()
    xv, yv = make_data(seed=1)
    exclude = {n for n, s in tasks.items() if s.is_adversarial}
    start = [p.detach().clone() for p in model.shared_parameters()]
    totals = []
    for _ in range(steps):
        out, z = model(x, return_features=True)
        losses = losses_of(out, y, tasks)
        optimizer.zero_grad(set_to_none=True)
        balancer.weighting.before_update(
            model=model,
            losses=losses,
            optimizer=optimizer,
            loss_fn=lambda m: losses_of(m(xv), yv, tasks),
            train_loss_fn=lambda m: losses_of(m(x), y, tasks),
        )
        total, _ = balancer.backward(losses, model.shared_parameters(), exclude=exclude, features=z)
        optimizer.step()
        totals.append(float(total))
    moved = max(float((p.detach() - s).abs().max()) for p, s in zip(model.shared_parameters(), start))
    return totals, moved, balancer


@pytest.mark.parametrize("gradient", PAPER_B_GRADIENTS)
@pytest.mark.parametrize("weighting", PAPER_B_WEIGHTINGS)
def test_every_paper_b_combination_trains(weighting, gradient):
    tasks = ADV_TASKS if gradient in {"pcgrad", "cagrad"} else TASKS  # adversarial head in some cases
    options = {"meta_lr": 0.01} if weighting == "autol" else {}
    totals, moved, balancer = train(weighting, gradient, tasks, **options)
    assert all(torch.isfinite(torch.tensor(totals))), totals
    assert moved > 1e-4
    logged = balancer.log_values()
    assert {f"weight.{n}" for n in tasks} <= set(logged) and {f"loss.{n}" for n in tasks} <= set(logged)
    if gradient != "none":
        assert -1.0 <= logged["cos.count.tumour"] <= 1.0
    if weighting == "autol":
        assert balancer.weighting.task_weights() != dict.fromkeys(tasks, 0.1)


@pytest.mark.parametrize("gradient", ["graddrop", "pcgrad", "cagrad", "upgrad"])
def test_representation_level_trains(gradient):
    totals, moved, balancer = train("naive", gradient, ADV_TASKS, level="representation")
    assert all(torch.isfinite(torch.tensor(totals))) and moved > 1e-4
    assert balancer.name == f"naive+rep:{gradient}"


@pytest.mark.parametrize("gradient", TORCHJD_NAMES)
def test_torchjd_aggregators_train(gradient):
    totals, moved, _ = train("uncert", gradient, ADV_TASKS, steps=3)
    assert all(torch.isfinite(torch.tensor(totals))) and moved > 1e-4


def test_famo_weighting_trains():
    totals, moved, balancer = train("famo", "none", TASKS, steps=4)
    assert all(torch.isfinite(torch.tensor(totals))) and moved > 1e-4
    assert sum(balancer.weighting.task_weights().values()) == pytest.approx(1.0)
