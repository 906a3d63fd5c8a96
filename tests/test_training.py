"""Training loop: class weights, masked targets, determinism, name binding, schedules, saving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mtlutils.evaluation import metrics
from mtlutils.models import ModelConfig, ReversalSchedule, parse_tasks
from mtlutils.training import (
    Job,
    TrainConfig,
    class_weights,
    fit,
    fit_many,
    load_run,
    predict,
    prepare_images,
    task_losses,
)

TASKS = {"tumour": "binary", "count": "regression", "area": "regression", "center": "adversarial-class"}
FAST = ModelConfig(trunk=(32,), dropout=0.1)


def easy_cohort(n: int = 300, size: int = 20, seed: int = 0):
    """Tumour patches have more dark 'nuclei'; each of 3 centers tints the image; count is the number
    of nuclei (z-scored, 10 % missing), area is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    center = rng.choice(np.array(["A", "B", "C"]), n)
    count = rng.poisson(2 + 6 * y).astype(float)
    img = np.full((n, size, size, 3), 200.0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for cy, cx in rng.integers(2, size - 2, (int(count[i]), 2)):
            img[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 3] = (90, 40, 140)
    tint = {"A": (0, 0, 0), "B": (25, -10, 0), "C": (-10, 10, 25)}
    img += np.array([tint[c] for c in center])[:, None, None, :]
    img += rng.normal(0, 10, img.shape)
    z = (count - count.mean()) / count.std()
    z[rng.random(n) < 0.1] = np.nan
    targets = {"tumour": y.astype(float), "count": z, "area": rng.normal(size=n), "center": center}
    split = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    return np.clip(img, 0, 255).astype(np.uint8), targets, split


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than two and immune to a busy machine (measured 5 s vs 60 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cohort():
    return easy_cohort()


def quick(**changes) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 16, "device": "cpu", "seed": 0}
    base.update(changes)
    return TrainConfig(**base)


def comparable(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["seconds"]).reindex(sorted(history.columns.drop("seconds")), axis=1)


# ------------------------------------------------------------------------------------ building blocks
def test_class_weights_from_frequencies():
    np.testing.assert_allclose(class_weights([0, 0, 0, 1]), [4 / 6, 2.0])
    np.testing.assert_allclose(class_weights([0, 1, np.nan, 1, 1]), [2.0, 4 / 6])
    w = class_weights(np.r_[np.zeros(82), np.ones(18)])
    assert w[1] / w[0] == pytest.approx(82 / 18)  # the paper's ratio, mean weight 1 over the rows
    with pytest.raises(ValueError, match="one class"):
        class_weights([1, 1, 1])
    with pytest.raises(ValueError, match="0/1"):
        class_weights([0, 1, 2])


def test_weighted_bce_value():
    specs = parse_tasks({"tumour": "binary"})
    logits = torch.tensor([0.3, -1.2, 2.0])
    y = torch.tensor([1.0, 0.0, 0.0])
    w = torch.tensor([0.5, 3.0])
    got = task_losses({"tumour": logits}, {"tumour": y}, specs, {"tumour": w})["tumour"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert float(got) == pytest.approx(float((bce * torch.tensor([3.0, 0.5, 0.5])).mean()))


def test_masked_missing_targets_contribute_no_gradient():
    specs = parse_tasks({"tumour": "binary", "count": "regression", "center": "adversarial-class"})
    out = {
        "tumour": torch.randn(4, requires_grad=True),
        "count": torch.randn(4, requires_grad=True),
        "center": torch.randn(4, 3, requires_grad=True),
    }
    targets = {
        "tumour": torch.tensor([1.0, float("nan"), 0.0, 1.0]),
        "count": torch.tensor([float("nan"), 0.5, float("nan"), -1.0]),
        "center": torch.tensor([2, -1, 0, -1]),
    }
    losses = task_losses(out, targets, specs)
    sum(losses.values()).backward()
    assert out["tumour"].grad[1] == 0 and torch.all(out["tumour"].grad[[0, 2, 3]] != 0)
    assert torch.all(out["count"].grad[[0, 2]] == 0) and torch.all(out["count"].grad[[1, 3]] != 0)
    assert torch.all(out["center"].grad[[1, 3]] == 0)
    assert all(torch.isfinite(t.grad).all() for t in out.values())
    expected = torch.nn.functional.mse_loss(out["count"][[1, 3]], targets["count"][[1, 3]])
    assert losses["count"].item() == pytest.approx(expected.item())
    # a task with no target in the batch is dropped, not multiplied by zero
    none = task_losses(out, {**targets, "count": torch.full((4,), float("nan"))}, specs)
    assert set(none) == {"tumour", "center"}


def test_prepare_images_resizes_once_to_channels_first_uint8():
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    out = prepare_images(images, size=16)
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.uint8
    flat = np.full((2, 32, 32, 3), 77, np.uint8)
    assert torch.all(prepare_images(flat, size=8) == 77)
    assert prepare_images(out).shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="uint8"):
        prepare_images(images.astype(np.float32))
    with pytest.raises(ValueError, match="colour channels"):
        prepare_images(np.zeros((2, 8, 8, 4), np.uint8))


# ---------------------------------------------------------------------------------------- fit
def test_training_learns_the_easy_task_and_logs_every_epoch(cohort):
    images, targets, split = cohort
    result = fit(images, targets, TASKS, split, model_config=FAST, config=quick(epochs=4, weighting="uncert"))
    test = split == "test"
    pred = result.predict(images[test])
    auc = metrics.auc(targets["tumour"][test], pred["tumour"])
    assert auc > 0.8, auc
    history = result.history
    assert len(history) >= 2
    for column in [
        "train_loss.tumour",
        "val_loss.count",
        "weight.center",
        "log_var.tumour",
        "val_auc.tumour",
        "val_r2.count",
        "val_acc.center",
        "reversal_lambda",
    ]:
        assert column in history and history[column].notna().all(), column
    assert history["log_var.tumour"].nunique() == len(history)  # learned, logged every epoch
    assert pred["center"].shape == (int(test.sum()), 3)
    np.testing.assert_allclose(pred["center"].sum(axis=1), 1.0, rtol=1e-5)
    assert result.classes["center"] == ["A", "B", "C"]
    assert 0 <= result.best_epoch < len(history)


def test_same_seed_same_metrics_and_different_seed_differs(cohort):
    images, targets, split = cohort
    runs = [fit(images, targets, TASKS, split, model_config=FAST, config=quick(seed=s)) for s in (1, 1, 2)]
    pd.testing.assert_frame_equal(comparable(runs[0].history), comparable(runs[1].history))
    assert not comparable(runs[0].history).equals(comparable(runs[2].history))


def test_reordering_concepts_does_not_change_results(cohort):
    images, targets, split = cohort
    tasks_b = {name: TASKS[name] for name in reversed(list(TASKS))}
    targets_b = {name: targets[name] for name in reversed(list(targets))}
    a = fit(images, targets, TASKS, split, model_config=FAST, config=quick(epochs=2, weighting="uncert"))
    b = fit(images, targets_b, tasks_b, split, model_config=FAST, config=quick(epochs=2, weighting="uncert"))
    pd.testing.assert_frame_equal(comparable(a.history), comparable(b.history))
    pa, pb = predict(a.model, images[:20]), predict(b.model, images[:20])
    for name in TASKS:
        np.testing.assert_array_equal(pa[name], pb[name])
    # and swapping which values belong to which concept does change the run (binding is by name)
    swapped = {**targets, "count": targets["area"], "area": targets["count"]}
    c = fit(images, swapped, TASKS, split, model_config=FAST, config=quick(epochs=2, weighting="uncert"))
    assert not np.allclose(c.history["val_r2.count"], a.history["val_r2.count"])


def test_two_phase_reversal_keeps_learned_weights_and_restores_only_after_switch(cohort):
    images, targets, split = cohort
    schedule = ReversalSchedule("two-phase", strength=1.0, switch_epoch=2)
    config = quick(epochs=4, patience=4, weighting="uncert", balancer_lr=0.05, reversal=schedule)
    result = fit(images, targets, TASKS, split, model_config=FAST, config=config)
    h = result.history
    assert h["reversal_lambda"].tolist() == [0.0, 0.0, 1.0, 1.0]  # mean strength during each epoch
    assert result.best_epoch >= 2
    s = h["log_var.count"].to_numpy()
    # no reset at the switch: the value keeps moving from where phase 1 left it
    assert abs(s[2] - s[1]) < abs(s[1] - config.init_log_var)
    assert all(m.strength == 1.0 for m in result.model.modules() if hasattr(m, "strength"))
    with pytest.raises(ValueError, match="switch"):
        quick(epochs=2, reversal=ReversalSchedule("two-phase", switch_epoch=5))


def test_early_stopping_restores_the_best_checkpoint(cohort):
    images, targets, split = cohort
    result = fit(
        images, targets, TASKS, split, model_config=FAST, config=quick(epochs=6, patience=1, lr=0.05)
    )
    h = result.history
    best = int(h["val_monitor"].idxmin())
    assert result.best_epoch == best
    assert len(h) <= best + 2  # stopped one epoch after the last improvement (or at the end)
    val = split == "val"
    pred = result.predict(images[val])["tumour"]
    y = targets["tumour"][val]
    w = class_weights(targets["tumour"][split == "train"])
    p = np.clip(pred, 1e-7, 1 - 1e-7)
    loss = np.mean(np.where(y == 1, w[1], w[0]) * -(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert loss == pytest.approx(h.loc[best, "val_loss.tumour"], rel=1e-4)


def test_transductive_losses_only_when_asked_and_never_the_main_label(cohort):
    images, targets, split = cohort
    test = split == "test"
    altered = {
        **targets,
        "count": np.where(test, 3.0, targets["count"]),
        "tumour": np.where(test, 1 - targets["tumour"], targets["tumour"]),
    }
    only_main_flipped = {**targets, "tumour": altered["tumour"]}
    base = fit(images, targets, TASKS, split, model_config=FAST, config=quick(epochs=1))
    off = fit(images, altered, TASKS, split, model_config=FAST, config=quick(epochs=1))
    pd.testing.assert_frame_equal(
        comparable(base.history), comparable(off.history)
    )  # test rows unused by default
    on = fit(images, targets, TASKS, split, model_config=FAST, config=quick(epochs=1, transductive=True))
    on_altered = fit(
        images, altered, TASKS, split, model_config=FAST, config=quick(epochs=1, transductive=True)
    )
    on_main = fit(
        images, only_main_flipped, TASKS, split, model_config=FAST, config=quick(epochs=1, transductive=True)
    )
    assert not comparable(on.history).equals(comparable(on_altered.history))  # test concepts are used
    pd.testing.assert_frame_equal(comparable(on.history), comparable(on_main.history))  # test labels never


def test_run_folder_is_written_and_reloads(cohort, tmp_path):
    images, targets, split = cohort
    result = fit(
        images, targets, TASKS, split, model_config=FAST, config=quick(epochs=2), run_dir=tmp_path / "run"
    )
    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == ["history.csv", "model.pt", "run.json"]
    saved = pd.read_csv(folder / "history.csv")
    assert len(saved) == len(result.history) and "val_auc.tumour" in saved
    model, payload = load_run(folder)
    assert payload["classes"]["center"] == ["A", "B", "C"]
    np.testing.assert_allclose(
        predict(model, images[:10])["tumour"], result.predict(images[:10])["tumour"], rtol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_run(tmp_path)


def test_bad_inputs_give_one_line_errors(cohort):
    images, targets, split = cohort
    with pytest.raises(ValueError, match="no targets for tasks"):
        fit(images, {"tumour": targets["tumour"]}, TASKS, split, config=quick())
    with pytest.raises(ValueError, match="'train' and 'val'"):
        fit(images, targets, TASKS, np.full(len(split), "train"), config=quick())
    with pytest.raises(ValueError, match="values for"):
        fit(images, {**targets, "area": targets["area"][:5]}, TASKS, split, config=quick())
    with pytest.raises(ValueError, match="0/1"):
        fit(images, {**targets, "tumour": targets["tumour"] * 2}, TASKS, split, config=quick())
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")
    paper = TrainConfig.paper(epochs=3)
    assert (paper.optimizer, paper.lr, paper.batch_size, paper.monitor, paper.epochs) == (
        "sgd",
        1e-4,
        32,
        "total",
        3,
    )
    with pytest.raises(ValueError, match="cannot process 20x20 px"):
        fit(images, targets, TASKS, split, model_config=ModelConfig(backbone="inception_v3"), config=quick())


def _jobs(split):
    random_concept = np.random.default_rng(0).normal(size=len(split))
    return [
        Job("base", {"tumour": "binary"}, quick(epochs=2)),
        Job(
            "random",
            {"tumour": "binary", "noise": "regression"},
            quick(epochs=2),
            targets={"noise": random_concept},
        ),
    ]


def test_fit_many_runs_named_jobs_with_their_own_targets(cohort):
    images, targets, split = cohort
    jobs = _jobs(split)
    runs = fit_many(images, targets, split, jobs, workers=1)
    assert list(runs) == ["base", "random"]
    assert "val_r2.noise" in runs["random"].history and "val_r2.noise" not in runs["base"].history
    single = fit(
        images, targets, jobs[0].tasks, split, model_config=jobs[0].model_config, config=jobs[0].config
    )
    pd.testing.assert_frame_equal(comparable(runs["base"].history), comparable(single.history))
    with pytest.raises(ValueError, match="unique"):
        fit_many(images, targets, split, [jobs[0], jobs[0]])


@pytest.mark.slow
def test_fit_many_workers_reproduce_the_in_process_runs(cohort):
    images, targets, split = cohort
    local = fit_many(images, targets, split, _jobs(split), workers=1)
    pooled = fit_many(images, targets, split, _jobs(split), workers=2)
    assert list(pooled) == ["base", "random"]
    for name in local:
        pd.testing.assert_frame_equal(comparable(local[name].history), comparable(pooled[name].history))


@pytest.mark.parametrize(
    ("weighting", "gradient"), [("autol", "none"), ("dwa", "pcgrad"), ("uncert", "cagrad")]
)
def test_paper_b_balancers_train_the_guided_cnn_through_fit(cohort, weighting, gradient):
    # the loop hands Auto-Lambda its optimizer and a second batch; every balancer of notebook 04 must
    # also drive notebook 03's CNN through the same call sequence
    images, targets, split = cohort
    config = quick(epochs=2, weighting=weighting, gradient=gradient)
    result = fit(images, targets, TASKS, split, model_config=FAST, config=config)
    history = result.history
    assert np.isfinite(history["train_total"]).all()
    weights = history[[c for c in history if c.startswith("weight.") and c != "weight.center"]]
    assert not weights.empty and np.isfinite(weights.to_numpy()).all()
    if weighting == "autol":  # lambda of the auxiliary tasks moved away from its start value 0.1
        assert not np.allclose(history["weight.count"].to_numpy(), 0.1, atol=1e-6), history["weight.count"]
