"""Gradient methods on known answers: PCGrad, CAGrad, GradDrop, exclusion, levels, guards, torchjd."""

from __future__ import annotations

import math

import pytest
import torch
from torchjd import aggregation as jd

from mtlutils.balancers import CAGrad, GradDrop, PCGrad, SumGradients, make_balancer
from mtlutils.balancers.cagrad import _objective, simplex_weights


def rows(*vectors) -> torch.Tensor:
    return torch.tensor(vectors, dtype=torch.float64)


def agg(method, matrix: torch.Tensor) -> torch.Tensor:
    return method.aggregate(matrix, matrix @ matrix.T)


def test_pcgrad_leaves_orthogonal_gradients_and_projects_opposite_ones():
    g = rows([1.0, 0.0], [0.0, 2.0])
    torch.testing.assert_close(agg(PCGrad(), g), torch.tensor([1.0, 2.0], dtype=torch.float64))
    g = rows([1.0, 1.0], [-1.0, 0.0])  # g1.g2 = -1: g1 -> (0, 1), g2 -> (-1, 0) + 1/2 (1, 1)
    torch.testing.assert_close(agg(PCGrad(), g), torch.tensor([-0.5, 1.5], dtype=torch.float64))
    g = rows([2.0, 0.0], [-1.0, 0.0])  # exactly opposite: both projected to zero
    torch.testing.assert_close(agg(PCGrad(), g), torch.zeros(2, dtype=torch.float64))


def test_pcgrad_guards_a_zero_gradient_and_is_reproducible():
    g = rows([1.0, -2.0], [0.0, 0.0])
    out = agg(PCGrad(), g)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([1.0, -2.0], dtype=torch.float64))
    g = torch.randn(4, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(agg(PCGrad(seed=5), g), agg(PCGrad(seed=5), g), rtol=0, atol=0)


def test_cagrad_with_c_zero_is_the_mean_gradient():
    g = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(agg(CAGrad(c=0.0), g), g.mean(0))
    torch.testing.assert_close(agg(CAGrad(c=0.4, rescale=True), g) * 1.16, agg(CAGrad(c=0.4), g))


def test_cagrad_two_task_solution_is_the_simplex_minimum():
    g = rows([1.0, 0.2], [-0.6, 1.0])
    gram = (g @ g.T).numpy()
    w = simplex_weights(gram, 0.4)
    c_norm = 0.4 * math.sqrt(gram.mean())

    def f(t):
        v = torch.tensor([t, 1 - t], dtype=torch.float64).numpy()
        return v @ gram.mean(1) + c_norm * math.sqrt(v @ gram @ v)

    grid = min(f(t / 10000) for t in range(10001))
    assert f(w[0]) <= grid + 1e-12


def test_cagrad_matches_torchjd_for_two_tasks():
    g = torch.randn(2, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g[1] = -0.7 * g[0] + 0.3 * g[1]  # a conflict
    theirs = jd.CAGrad(c=0.4, norm_eps=0.0)(g)
    torch.testing.assert_close(agg(CAGrad(c=0.4), g), theirs, atol=1e-6, rtol=1e-6)


def test_cagrad_three_tasks_is_at_least_as_optimal_as_torchjd():
    """m > 2: SLSQP here, Clarabel in torchjd; they agree to ~2e-5 and our simplex objective is lower."""
    g = torch.randn(3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    g[1] = -0.7 * g[0] + 0.3 * g[1]
    torch.testing.assert_close(agg(CAGrad(c=0.4), g), jd.CAGrad(c=0.4, norm_eps=0.0)(g), atol=1e-4, rtol=1e-3)
    gram = (g @ g.T).numpy()
    theirs = jd.CAGradWeighting(c=0.4, norm_eps=0.0)(torch.from_numpy(gram)).numpy() - 1 / 3
    theirs = theirs / theirs.sum()
    c_norm = 0.4 * math.sqrt(gram.mean())
    assert _objective(simplex_weights(gram, 0.4), gram, c_norm) <= _objective(theirs, gram, c_norm) + 1e-12


def test_pcgrad_matches_torchjd():
    g = rows([1.0, 1.0, 0.5], [-1.0, 0.2, 0.1])
    torch.testing.assert_close(agg(PCGrad(), g), jd.PCGrad()(g), atol=1e-6, rtol=1e-6)


def test_graddrop_keeps_everything_when_signs_agree_and_one_sign_otherwise():
    g = rows([1.0, -2.0, 0.0], [3.0, -1.0, 0.0])
    torch.testing.assert_close(agg(GradDrop(seed=1), g), g.sum(0))
    g = torch.randn(2, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = agg(GradDrop(seed=1), g)
    positive, negative = g.clamp_min(0).sum(0), g.clamp_max(0).sum(0)
    assert bool(((out == positive) | (out == negative)).all())  # each coordinate: one sign's sum
    torch.testing.assert_close(out, agg(GradDrop(seed=1), g), rtol=0, atol=0)  # same seed, same mask
    assert not torch.equal(out, agg(GradDrop(seed=2), g))


def test_graddrop_matches_torchjd_with_the_same_random_numbers():
    g = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    theirs = jd.GradDrop()(g)
    torch.testing.assert_close(GradDrop(seed=7).aggregate(g, g @ g.T), theirs, atol=1e-6, rtol=1e-6)


def shared_setup():
    torch.manual_seed(0)
    p = torch.randn(3, requires_grad=True)
    head = torch.randn(3, requires_grad=True)
    z = torch.tanh(p * 2.0)
    terms = {"a": (z * head).sum(), "b": -(z * head).sum() + (z**2).sum(), "adv": (z * 0.5).sum()}
    return p, head, z, terms


def grad_of(output, param) -> torch.Tensor:
    return torch.autograd.grad(output, param, retain_graph=True)[0]


def test_adversarial_gradient_is_added_after_aggregation_unprojected():
    p, head, _, terms = shared_setup()
    ga, gb, gadv = (grad_of(terms[k], p) for k in ("a", "b", "adv"))
    expected = PCGrad().aggregate(torch.stack([ga, gb]), torch.stack([ga, gb]) @ torch.stack([ga, gb]).T)
    expected = expected + gadv
    heads_expected = grad_of(sum(terms.values()), head)
    make_balancer(
        "naive", "pcgrad", {"a": "binary", "b": "regression", "adv": "regression"}
    ).gradient.backward(terms, [p], exclude={"adv"})
    torch.testing.assert_close(p.grad, expected)
    torch.testing.assert_close(head.grad, heads_expected)  # heads keep their own (summed) gradients


def test_representation_level_aggregates_at_the_embedding():
    p, head, z, terms = shared_setup()
    dza, dzb, dzadv = (grad_of(terms[k], z) for k in ("a", "b", "adv"))
    stacked = torch.stack([dza, dzb])
    dz = PCGrad().aggregate(stacked, stacked @ stacked.T) + dzadv
    expected = torch.autograd.grad(z, p, grad_outputs=dz, retain_graph=True)[0]
    heads_expected = grad_of(sum(terms.values()), head)
    method = PCGrad(level="representation")
    method.backward(terms, [p], exclude={"adv"}, features=z)
    torch.testing.assert_close(p.grad, expected)
    torch.testing.assert_close(head.grad, heads_expected)
    with pytest.raises(ValueError, match="features"):
        PCGrad(level="representation").backward(shared_setup()[3], [p])


def test_non_finite_gradients_raise_instead_of_propagating():
    p = torch.ones(2, requires_grad=True)
    terms = {"a": (p * float("inf")).sum() * 0 + p.sum(), "b": torch.sqrt(-p).sum() * 0 + p.sum()}
    for method in (PCGrad(), CAGrad(), GradDrop()):
        with pytest.raises(FloatingPointError, match="non-finite"):
            method.backward(terms, [p])
    with pytest.raises(FloatingPointError, match="non-finite weighted loss"):
        SumGradients().backward({"a": p.sum() * float("nan")}, [p])


def test_zero_task_gradient_is_handled():
    p = torch.ones(2, requires_grad=True)
    for method in (PCGrad(), CAGrad(), GradDrop()):
        p.grad = None
        method.backward({"a": (2 * p).sum(), "b": p.sum() * 0.0}, [p])
        assert torch.isfinite(p.grad).all()
    torch.testing.assert_close(p.grad, torch.full((2,), 2.0))


def test_cosines_are_logged_per_epoch():
    p, _, _, terms = shared_setup()
    ga, gb = grad_of(terms["a"], p), grad_of(terms["b"], p)
    balancer = make_balancer("naive", "cagrad", {"a": "binary", "b": "regression", "adv": "regression"})
    balancer.backward({k: v for k, v in terms.items()}, [p], exclude={"adv"})
    logged = balancer.log_values()
    assert logged["cos.a.b"] == pytest.approx(
        float(torch.nn.functional.cosine_similarity(ga, gb, 0)), abs=1e-6
    )
    assert "cos.a.b" not in balancer.log_values()  # statistics restart after each call


def test_none_logs_cosines_only_when_asked():
    p, _, _, terms = shared_setup()
    balancer = make_balancer(
        "naive",
        "none",
        {"a": "binary", "b": "regression", "adv": "regression"},
        gradient_options={"cosine_every": 1},
    )
    balancer.backward(terms, [p], exclude={"adv"})
    assert "cos.a.b" in balancer.log_values()


def test_torchjd_pcgrad_through_the_adapter_equals_ours_end_to_end():
    tasks = {"a": "binary", "b": "regression", "adv": "regression"}
    grads = []
    for name in ("pcgrad", "jd_pcgrad"):
        p, head, _, terms = shared_setup()
        make_balancer("naive", name, tasks).gradient.backward(terms, [p], exclude={"adv"})
        grads.append((p.grad.clone(), head.grad.clone()))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-6)
