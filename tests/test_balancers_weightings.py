"""Weightings on known answers: DWA history, uncertainty optimum, Auto-Lambda's virtual step and meta-gradient."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from mtlutils.balancers import (
    AutoLambdaWeighting,
    DWAWeighting,
    UncertaintyWeighting,
    make_balancer,
    virtual_step,
)
from mtlutils.models import parse_tasks

TASKS = parse_tasks({"tumour": "binary", "count": "regression"})


def test_dwa_weights_from_a_hand_computed_history():
    dwa = DWAWeighting(TASKS)
    assert dwa.task_weights() == {"count": 1.0, "tumour": 1.0}
    dwa.end_epoch({"tumour": 1.0, "count": 4.0})
    assert dwa.task_weights() == {"count": 1.0, "tumour": 1.0}  # lambda = 1 for the first two epochs
    dwa.end_epoch({"tumour": 0.5, "count": 3.0})
    # w = (0.5, 0.75); lambda = 2 * softmax(w / 2)
    e_t, e_c = math.exp(0.25), math.exp(0.375)
    expected = {"tumour": 2 * e_t / (e_t + e_c), "count": 2 * e_c / (e_t + e_c)}
    assert dwa.task_weights() == pytest.approx(expected, rel=1e-12)
    out = dwa({"tumour": torch.tensor(2.0), "count": torch.tensor(1.0)})
    assert float(out["tumour"]) == pytest.approx(2 * expected["tumour"], rel=1e-6)
    dwa.end_epoch({"tumour": 0.5, "count": 1.5})  # ratios (1, 0.5): uses only the last two epochs
    e_t, e_c = math.exp(0.5), math.exp(0.25)
    assert dwa.task_weights()["tumour"] == pytest.approx(2 * e_t / (e_t + e_c), rel=1e-12)
    restored = DWAWeighting(TASKS)
    restored.load_state_dict(dwa.state_dict())
    assert restored.task_weights() == dwa.task_weights() and len(restored.history) == 3
    with pytest.raises(ValueError, match="positive"):
        dwa.end_epoch({"tumour": float("nan"), "count": 1.0})


@pytest.mark.parametrize("loss", [0.01, 0.3, 2.0, 10.0])
def test_uncertainty_reaches_its_stationary_point_with_the_recommended_lr(loss):
    weighting = UncertaintyWeighting(TASKS)
    assert weighting.stationary_log_var("tumour", loss) == pytest.approx(math.log(2 * loss))  # e^-s L + s/2
    assert weighting.stationary_log_var("count", loss) == pytest.approx(math.log(loss))  # e^-s L/2 + s/2
    opt = torch.optim.AdamW(weighting.parameters(), lr=make_balancer("uncert", tasks=TASKS).recommended_lr)
    opt.param_groups[0]["weight_decay"] = 0.0
    values = {"tumour": torch.tensor(loss), "count": torch.tensor(loss)}
    for _ in range(300):
        opt.zero_grad()
        sum(weighting(values).values()).backward()
        opt.step()
    for name in TASKS:
        assert float(weighting.log_vars[name].detach()) == pytest.approx(
            weighting.stationary_log_var(name, loss), abs=0.05
        )
    # at the optimum every term's weight is 1 / (2 L)
    assert weighting.task_weights()["count"] == pytest.approx(1 / (2 * loss), rel=0.06)


# ------------------------------------------------------------------------------------- Auto-Lambda
def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    return x, torch.stack([x[:, 0] - x[:, 1], x[:, 2]], 1)


def tiny_losses(model, data) -> dict[str, torch.Tensor]:
    x, y = data
    out = model(x)
    return {"tumour": ((out[:, 0] - y[:, 0]) ** 2).mean(), "count": ((out[:, 1] - y[:, 1]) ** 2).mean()}


def warmed_optimizer(model, kind: str) -> torch.optim.Optimizer:
    if kind == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    elif kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.05)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    for seed in range(3):  # non-trivial optimizer state
        opt.zero_grad()
        sum(tiny_losses(model, batch(seed)).values()).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_virtual_step_equals_the_optimizer_step(kind):
    model = tiny_model()
    opt = warmed_optimizer(model, kind)
    params = list(model.parameters())
    grads = torch.autograd.grad(sum(tiny_losses(model, batch(9)).values()), params)
    new, scales = virtual_step(params, list(grads), opt)
    twin, twin_opt = copy.deepcopy((model, opt))
    for p, g in zip(twin.parameters(), grads):
        p.grad = g.clone()
    twin_opt.step()
    for a, b in zip(new, twin.parameters()):
        torch.testing.assert_close(a, b.detach(), atol=1e-12, rtol=1e-10)
    # the sensitivity: d theta' / d g = -scale, checked by central differences through the real optimizer
    h = 1e-6
    for k in range(len(params)):
        probe = []
        for sign in (1, -1):
            twin, twin_opt = copy.deepcopy((model, opt))
            for j, (p, g) in enumerate(zip(twin.parameters(), grads)):
                p.grad = g.clone() + (sign * h if j == k else 0.0)
            twin_opt.step()
            probe.append(list(twin.parameters())[k].detach())
        torch.testing.assert_close(-(probe[0] - probe[1]) / (2 * h), scales[k], atol=1e-6, rtol=1e-4)


def reference_hypergradient(model, opt, lambdas, train, val, primary="tumour", h=1e-6):
    """dL_pri(theta') / dlambda by central differences through a real step of a copy of the optimizer."""
    out = {}
    for i, name in enumerate(["count", "tumour"]):
        values = []
        for sign in (1, -1):
            twin, twin_opt = copy.deepcopy((model, opt))
            lam = lambdas.clone()
            lam[i] += sign * h
            twin_opt.zero_grad()
            losses = tiny_losses(twin, train)
            (lam[0] * losses["count"] + lam[1] * losses["tumour"]).backward()
            twin_opt.step()
            values.append(float(tiny_losses(twin, val)[primary].detach()))
        out[name] = (values[0] - values[1]) / (2 * h)
    return out


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
@pytest.mark.parametrize("hvp", ["exact", "finite-difference"])
def test_autol_meta_gradient_equals_the_real_optimizer_one(kind, hvp):
    model = tiny_model()
    opt = warmed_optimizer(model, kind)
    weighting = AutoLambdaWeighting(TASKS, init=0.7, hvp=hvp).double()
    train, val = batch(11), batch(12)
    ours = weighting.hypergradient(
        model,
        tiny_losses(model, train),
        opt,
        loss_fn=lambda m: tiny_losses(m, val),
        train_loss_fn=lambda m: tiny_losses(m, train),
    )
    reference = reference_hypergradient(model, opt, weighting.lambdas.clone(), train, val)
    tolerance = 1e-6 if hvp == "exact" else 2e-3  # finite differences: O(eps^2) with |eps u| = 0.01
    for name in TASKS:
        assert ours[name] == pytest.approx(reference[name], rel=tolerance, abs=1e-9), (ours, reference)
    if kind == "adamw":  # the SGD-shaped virtual step of the published code, measured against AdamW's
        sgd_like = AutoLambdaWeighting(TASKS, init=0.7, hvp="exact", virtual_lr=0.01).double()
        approx = sgd_like.hypergradient(model, tiny_losses(model, train), None, lambda m: tiny_losses(m, val))
        errors = [abs(approx[n] - reference[n]) / abs(reference[n]) for n in TASKS]
        assert max(errors) > 0.1  # far off: modelling Adam's step matters


def planted_problem(seed: int = 0):
    """A primary task y = w.x, a helpful auxiliary task (the same target, so its gradient agrees) and a
    harmful one (the negated target, so its gradient opposes) on one shared linear layer."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, generator=g)

    def data(n=64):
        x = torch.randn(n, 5, generator=g)
        return x, x @ w

    tasks = parse_tasks({"main": "binary", "helpful": "regression", "harmful": "regression"})
    return tasks, data


def test_autol_raises_a_helpful_auxiliary_and_lowers_a_harmful_one():
    tasks, data = planted_problem()
    torch.manual_seed(0)
    model = nn.Linear(5, 1, bias=False)

    def losses_of(module, d):
        x, y = d
        out = module(x).squeeze(1)
        return {
            "main": ((out - y) ** 2).mean(),
            "helpful": ((out - y) ** 2).mean(),
            "harmful": ((out + y) ** 2).mean(),
        }

    balancer = make_balancer("autol", "none", tasks, primary="main", meta_lr=0.01)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(40):
        train, val = data(), data()
        losses = losses_of(model, train)
        opt.zero_grad()
        balancer.weighting.before_update(
            model=model,
            losses=losses,
            optimizer=opt,
            loss_fn=lambda m, val=val: losses_of(m, val),
            train_loss_fn=lambda m, train=train: losses_of(m, train),
        )
        balancer.backward(losses, list(model.parameters()))
        opt.step()
    weights = balancer.weighting.task_weights()
    assert weights["helpful"] > 0.1 + 0.05 and weights["harmful"] < 0.1 - 0.05, weights
    assert list(balancer.parameters()) == []  # lambda is never handed to the model optimizer


def test_autol_is_reproducible_and_explains_missing_arguments():
    tasks, data = planted_problem(seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.2), nn.Linear(8, 1))
        weighting = AutoLambdaWeighting(tasks, primary="main", meta_lr=0.01)
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            x = torch.randn(16, 5, generator=g)
            fn = lambda m, x=x: {k: m(x).pow(2).mean() * (i + 1) for i, k in enumerate(tasks)}  # noqa: E731
            losses = fn(model)
            weighting.before_update(model=model, losses=losses, optimizer=opt, loss_fn=fn, train_loss_fn=fn)
            opt.zero_grad()
            sum(weighting(losses).values()).backward()
            opt.step()
        runs.append(weighting.task_weights())
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match="loss_fn"):
        AutoLambdaWeighting(tasks, primary="main").before_update(model=model, losses=losses)


def test_famo_terms_sum_to_torchjd_famo():
    from torchjd.scalarization import FAMO

    balancer = make_balancer("famo", "none", TASKS)
    values = {"count": torch.tensor(0.7), "tumour": torch.tensor(2.0)}
    ours = sum(balancer.weighting(values).values())
    assert float(ours) == pytest.approx(
        float(FAMO(2)(torch.stack([values["count"], values["tumour"]]))), rel=1e-6
    )
