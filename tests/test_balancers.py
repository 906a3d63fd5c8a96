"""Loss weightings and gradient methods: formulas, learned uncertainty parameters, registry errors."""

from __future__ import annotations

import math

import pytest
import torch

from mtlutils.balancers import (
    Balancer,
    NaiveWeighting,
    SumGradients,
    UncertaintyWeighting,
    make_balancer,
)
from mtlutils.models import GuidedNet, ModelConfig, TaskSpec, parse_tasks
from mtlutils.training import TrainConfig, make_optimizer, task_losses

TASKS = parse_tasks(
    {
        "tumour": "binary",
        "count": "regression",
        "center": TaskSpec("center", "adversarial-class", n_classes=3),
    }
)


def losses(**values: float) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v) for k, v in values.items()}


def test_naive_weighting_is_a_weighted_sum():
    plain = NaiveWeighting(TASKS)
    out = plain(losses(tumour=0.5, count=2.0, center=1.0))
    assert {k: float(v) for k, v in out.items()} == {"center": 1.0, "count": 2.0, "tumour": 0.5}
    weighted = NaiveWeighting(TASKS, weights={"count": 0.1, "center": 3.0})
    out = weighted(losses(tumour=0.5, count=2.0, center=1.0))
    assert float(out["count"]) == pytest.approx(0.2) and float(out["center"]) == pytest.approx(3.0)
    assert weighted.task_weights() == {"center": 3.0, "count": 0.1, "tumour": 1.0}
    assert weighted.log_values()["weight.count"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown tasks"):
        NaiveWeighting(TASKS, weights={"area": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        NaiveWeighting(TASKS, weights={"count": -1.0})
    with pytest.raises(ValueError, match="unknown tasks"):
        plain(losses(area=1.0))


def test_uncertainty_forms_for_classification_and_regression():
    weighting = UncertaintyWeighting(TASKS)
    s = {"tumour": 0.4, "count": -0.3, "center": 1.1}
    with torch.no_grad():
        for name, value in s.items():
            weighting.log_vars[name].fill_(value)
    out = {k: v.detach() for k, v in weighting(losses(tumour=0.6, count=2.0, center=1.5)).items()}
    assert float(out["tumour"]) == pytest.approx(math.exp(-0.4) * 0.6 + 0.2, rel=1e-6)
    assert float(out["center"]) == pytest.approx(math.exp(-1.1) * 1.5 + 0.55, rel=1e-6)
    assert float(out["count"]) == pytest.approx(0.5 * math.exp(0.3) * 2.0 - 0.15, rel=1e-6)
    weights = weighting.task_weights()
    assert weights["count"] == pytest.approx(0.5 * math.exp(0.3), rel=1e-6)
    assert weights["tumour"] == pytest.approx(math.exp(-0.4), rel=1e-6)
    logged = weighting.log_values()
    assert logged["log_var.center"] == pytest.approx(1.1) and "weight.center" in logged
    # a task absent from this batch is left out, not weighted by zero
    assert set(weighting(losses(tumour=0.6))) == {"tumour"}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_uncertainty_parameters_are_optimised_without_weight_decay(optimizer):
    torch.manual_seed(0)
    model = GuidedNet(TASKS, ModelConfig(trunk=(8,)))
    balancer = make_balancer("uncert", "none", TASKS)
    opt = make_optimizer(model, balancer, TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=0.1))
    groups = {g["group"]: g for g in opt.param_groups}
    balancer_ids = {id(p) for p in balancer.parameters()}
    assert {id(p) for p in groups["balancer"]["params"]} == balancer_ids
    assert groups["balancer"]["weight_decay"] == 0.0
    assert groups["weights"]["weight_decay"] == 0.1
    assert not balancer_ids & {id(p) for p in groups["weights"]["params"]}
    if optimizer == "sgd":
        assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9

    before = {k: v.item() for k, v in balancer.weighting.log_vars.items()}
    x = torch.rand(8, 3, 32, 32)
    targets = {
        "tumour": torch.tensor([0, 1] * 4, dtype=torch.float32),
        "count": torch.randn(8),
        "center": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]),
    }
    opt.zero_grad()
    balancer.backward(task_losses(model(x), targets, TASKS), model.shared_parameters())
    opt.step()
    after = {k: v.item() for k, v in balancer.weighting.log_vars.items()}
    assert all(abs(after[k] - before[k]) > 1e-4 for k in before), (before, after)


def test_balancer_lr_option_sets_the_group_lr():
    model = GuidedNet(TASKS, ModelConfig(trunk=(8,)))
    balancer = make_balancer("uncert", "none", TASKS)
    opt = make_optimizer(model, balancer, TrainConfig(lr=1e-3, balancer_lr=0.05))
    groups = {g["group"]: g for g in opt.param_groups}
    assert groups["balancer"]["lr"] == 0.05 and groups["weights"]["lr"] == 1e-3
    assert "balancer" not in {
        g["group"]
        for g in make_optimizer(model, make_balancer("naive", tasks=TASKS), TrainConfig()).param_groups
    }


def test_sum_gradients_equals_the_sum_of_task_gradients():
    torch.manual_seed(0)
    p = torch.randn(4, requires_grad=True)
    terms = {"a": (p**2).sum(), "b": (3 * p).sum()}
    total = SumGradients().backward(terms, [p])
    torch.testing.assert_close(p.grad, 2 * p.detach() + 3)
    assert float(total) == pytest.approx(((p**2).sum() + 3 * p.sum()).item())
    with pytest.raises(ValueError, match="no task losses"):
        SumGradients().backward({}, [p])


def test_balancer_backward_returns_weighted_terms_and_validation_total():
    balancer = make_balancer("naive", "none", TASKS, weights={"count": 2.0})
    assert isinstance(balancer, Balancer) and balancer.name == "naive+none"
    w = torch.tensor(1.0, requires_grad=True)
    total, weighted = balancer.backward({"tumour": w * 0.5, "count": w * 1.5}, [w])
    assert float(total) == pytest.approx(3.5)
    assert float(weighted["count"]) == pytest.approx(3.0)
    assert float(w.grad) == pytest.approx(3.5)
    assert float(balancer.weighted_total(losses(tumour=1.0, count=1.0))) == pytest.approx(3.0)


def test_make_balancer_names():
    assert isinstance(make_balancer("vanilla", tasks=TASKS).weighting, NaiveWeighting)
    assert isinstance(make_balancer("uncertainty", tasks=TASKS).weighting, UncertaintyWeighting)
    assert make_balancer("uncert", tasks=TASKS, init_log_var=-0.7).log_values()[
        "log_var.count"
    ] == pytest.approx(-0.7)
    with pytest.raises(ValueError, match="not one of"):
        make_balancer("naive", "magic", tasks=TASKS)
    with pytest.raises(ValueError, match="not one of"):
        make_balancer("magic", tasks=TASKS)
    with pytest.raises(ValueError, match="needs the tasks"):
        make_balancer("naive")
