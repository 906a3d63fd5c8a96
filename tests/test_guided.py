"""Paper A's experiment grid: plans, evaluation, the honest selection of the best model, center probes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mtlutils import models
from mtlutils.experiments import center_probes, guided


def test_plan_covers_table2_with_one_baseline_per_seed():
    plan = guided.grid_plan(seeds=range(3), extra_variants={"random": ("random",)})
    # 7 guided IDs x 2 weightings + 1 baseline + 2 random variants, per seed
    assert len(plan) == 3 * (7 * 2 + 1 + 2)
    assert plan["name"].is_unique
    baseline = plan[plan["variant"] == "id1"]
    assert len(baseline) == 3 and set(baseline["weighting"]) == {"vanilla"}
    assert plan.loc[plan["variant"] == "id8", "tasks"].iloc[0] == ("area", "count", "contrast", "center")
    assert set(plan.loc[plan["variant"] == "id6", "description"]) == {"+center (adversarial), +count"}
    only_uncert = guided.grid_plan(ids=[1, 3], weightings=("uncertainty",), seeds=[7])
    assert list(only_uncert["name"]) == ["id1-vanilla-s7", "id3-uncertainty-s7"]


def test_plan_rejects_unknown_ids_and_weightings():
    with pytest.raises(ValueError, match="model IDs \\[9\\]"):
        guided.grid_plan(ids=[1, 9])
    with pytest.raises(ValueError, match="weightings"):
        guided.grid_plan(weightings=("dwa",))
    with pytest.raises(ValueError, match="empty"):
        guided.grid_plan(seeds=[])


def test_jobs_bind_task_kinds_and_settings():
    plan = guided.grid_plan(ids=[7], weightings=("uncertainty",), seeds=[4])
    (job,) = guided.plan_jobs(plan, guided.TrainConfig(epochs=3))
    assert job.tasks == {"tumour": "binary", "center": "adversarial-class", "area": "regression"}
    assert job.config.weighting == "uncertainty" and job.config.seed == 4 and job.config.epochs == 3


def test_targets_name_the_missing_columns_and_keep_nan():
    table = pd.DataFrame(
        {"label": [0, 1, np.nan], "center": ["A", "B", "C"], "count": [0.1, np.nan, -1.0], "area": [1, 2, 3]}
    )
    targets = guided.guided_targets(table, ["count", "area"], random_seed=1)
    assert np.isnan(targets["tumour"][2]) and np.isnan(targets["count"][1])
    assert targets["random"].shape == (3,)
    assert np.array_equal(targets["random"], guided.guided_targets(table, ["count"], random_seed=1)["random"])
    with pytest.raises(ValueError, match="contrast"):
        guided.guided_targets(table, ["contrast"])


def _fake_runs(rng):
    """Labels, split and scores where id3 is better than the baseline, id2 wins on external only."""
    n = 400
    y = (rng.random(n) < 0.4).astype(float)
    split = np.array(["val", "test", "external", "train"] * (n // 4))
    slides = np.arange(n) // 10
    plan = guided.grid_plan(ids=[1, 2, 3], weightings=("vanilla",), seeds=range(3))
    scores = {}
    for row in plan.itertuples():
        signal = {"id1": 1.0, "id2": 1.0, "id3": 2.5}[row.variant]
        s = signal * y + rng.normal(size=n)
        if row.variant == "id2":
            s = np.where(split == "external", 4 * y + rng.normal(size=n), s - 0.5 * y)
        scores[row.name] = 1 / (1 + np.exp(-s))
    return plan, scores, y, split, slides


def test_summary_selection_on_validation_and_paired_comparison():
    plan, scores, y, split, slides = _fake_runs(np.random.default_rng(0))
    runs = guided.evaluate_runs(plan, scores, y, split)
    assert {"val_auc", "int_auc", "ext_auc", "int_f1", "ext_f1"} <= set(runs.columns)
    summary = guided.summarise(runs)
    assert len(summary) == 3 and (summary["seeds"] == 3).all()
    row = summary.set_index("variant").loc["id3"]
    assert row["int_auc"] == pytest.approx(runs.loc[runs["variant"] == "id3", "int_auc"].mean())
    assert row["int_auc_sd"] == pytest.approx(runs.loc[runs["variant"] == "id3", "int_auc"].std())
    # id2 has the best external AUC, but the selection looks at validation only
    assert summary.set_index("variant")["ext_auc"].idxmax() == "id2"
    assert guided.best_guided(summary)["variant"] == "id3"
    gain = guided.compare_configurations(
        runs, scores, y, split, ("id3", "vanilla"), groups=slides, n_boot=300
    )
    assert gain["difference"] > 0.1 and gain["p_value"] < 0.05
    assert gain["difference"] == pytest.approx(
        runs.loc[runs["variant"] == "id3", "ext_auc"].mean()
        - runs.loc[runs["variant"] == "id1", "ext_auc"].mean()
    )
    assert "clusters" in gain["test"] and "Wilcoxon" in gain["wilcoxon_test"]
    assert gain["wilcoxon_p"] == pytest.approx(0.25)  # the floor with 3 seeds
    same = guided.compare_configurations(runs, scores, y, split, ("id1", "vanilla"), n_boot=100)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="no trainings"):
        guided.compare_configurations(runs, scores, y, split, ("id8", "uncertainty"))


def test_best_guided_needs_a_guided_configuration():
    summary = pd.DataFrame({"variant": ["id1", "random"], "id": [1.0, np.nan], "val_auc": [0.8, 0.9]})
    with pytest.raises(ValueError, match="no guided"):
        guided.best_guided(summary)


def _probe_data(n: int = 240, seed: int = 0):
    """12 slides (4 per center), labels confounded with the center, a random CNN whose colour cast per
    center reaches the features."""
    rng = np.random.default_rng(seed)
    slides = np.repeat(np.arange(12), n // 12)
    centers = np.array(["A", "B", "C"])[slides % 3]
    labels = (rng.random(n) < np.array([0.2, 0.5, 0.8])[slides % 3]).astype(float)
    images = rng.integers(60, 200, size=(n, 3, 32, 32)).astype(np.uint8)
    images[centers == "B", 0] = 250
    images[centers == "C", 2] = 250
    return torch.as_tensor(images), centers, slides, labels


def test_center_probes_of_a_model_with_floors_and_controls():
    torch.manual_seed(0)
    net = models.GuidedNet(models.parse_tasks({"tumour": "binary"}), models.ModelConfig())
    images, centers, slides, labels = _probe_data()
    result = SimpleNamespace(model=net)
    table = center_probes.probe_models(
        {"m": ["m"]}, {"m": result}, images, centers, slides, labels, n_boot=100
    )
    row = table.loc["m"]
    assert (
        row["width"] == 128
        and row["linear"] > 0.9
        and row["linear_low"] <= row["linear"] <= row["linear_high"]
    )
    assert row["within_0"] > 0.8 and row["within_1"] > 0.8
    assert row["shuffled"] < 0.6  # centers shuffled by slide: near chance 1/3, not the true 0.9+
    floors = center_probes.floors(images, centers, slides, labels, n_boot=100)
    assert floors["chance"]["acc"] == pytest.approx(1 / 3)
    assert 0.4 < floors["label_only"]["acc"] < 0.8  # the label alone beats chance: the confounder
    assert floors["colour"]["acc"] > 0.9


def test_adversary_plan_changes_only_its_rows_configs():
    plan = pd.concat(
        [guided.grid_plan(ids=[1], seeds=[0]), center_probes.adversary_plan([0])], ignore_index=True
    )
    jobs = {j.name: j for j in guided.plan_jobs(plan, guided.TrainConfig(epochs=2))}
    assert jobs["id1-vanilla-s0"].model_config.adversary == models.AdversaryConfig()
    mlp = jobs["id5-mlp3_k3-vanilla-s0"]
    assert (
        mlp.model_config.adversary.n_heads == 3 and mlp.config.adversary_steps == 3 and mlp.config.epochs == 2
    )
    assert jobs["id5-confusion-vanilla-s0"].model_config.adversary.objective == "confusion"
    assert center_probes.probe_rows(np.array(["train", "val", "test", "external"])).tolist() == [1, 2]


def test_within_center_auc_and_oracle_threshold():
    y = np.array([0, 1, 0, 1, 0, 0, 1, 1.0])
    score = np.array([0.1, 0.2, 0.15, 0.3, 0.7, 0.8, 0.9, 0.95])  # ranked within each center, shifted between
    c = np.array(["A"] * 4 + ["B"] * 4)
    assert guided.within_center_auc(y, score, c) == pytest.approx(1.0)
    thr, f1 = guided.best_threshold_f1(y[:4], score[:4])
    assert f1 == pytest.approx(1.0) and 0.15 < thr <= 0.2 + 1e-9


def test_run_plan_trains_predicts_and_evaluates_every_row():
    rng = np.random.default_rng(0)
    n = 160
    y = (np.arange(n) % 2).astype(float)
    images = rng.integers(0, 120, size=(n, 16, 16, 3)).astype(np.uint8)
    images[y == 1, :, :, 0] = 230  # an easy cue
    split = np.array(["train", "train", "val", "test", "external"] * (n // 5))
    targets = {"tumour": y, "center": np.where(np.arange(n) % 4 < 2, "A", "B"), "count": rng.normal(size=n)}
    plan = guided.grid_plan(ids=[1, 6], weightings=("uncertainty",), seeds=[0])
    config = guided.TrainConfig(epochs=2, batch_size=32, device="cpu")
    out = guided.run_plan(plan, images, targets, split, config, workers=1)
    assert list(out.runs["name"]) == list(plan["name"]) == list(out.scores)
    assert all(s.shape == (n,) for s in out.scores.values())
    assert out.runs["int_auc"].between(0, 1).all() and (out.runs["epochs_run"] >= 1).all()
    assert set(out.results["id6-uncertainty-s0"].model.tasks) == {"tumour", "center", "count"}


def test_uncertainty_settling_compares_final_s_with_the_stationary_value():
    # two runs, last epochs: tumour (classification) s* = log(2 L), count (regression) s* = log(L)
    history = pd.DataFrame(
        {
            "run": ["a", "a", "b", "b"],
            "log_var.tumour": [0.0, np.log(2 * 0.3), 0.0, np.log(2 * 0.3) + 0.2],
            "loss.tumour": [0.5, 0.3, 0.5, 0.3],
            "weight.tumour": [1.0, 1 / 0.6, 1.0, 1.0],
            "log_var.count": [0.0, np.log(0.8), 0.0, np.log(0.8)],
            "loss.count": [1.0, 0.8, 1.0, 0.8],
            "weight.count": [0.5, 0.625, 0.5, 0.625],
        }
    )
    table = guided.uncertainty_settling(history, {"tumour": "binary", "count": "regression"})
    assert table.loc["tumour", "s_star"] == pytest.approx(np.log(0.6))
    assert table.loc["tumour", "gap"] == pytest.approx(0.1)  # mean of 0 and 0.2
    assert table.loc["count", "s_star"] == pytest.approx(np.log(0.8)) and table.loc[
        "count", "gap"
    ] == pytest.approx(0)


def test_probe_sentences_place_each_model_against_the_floor():
    table = pd.DataFrame(
        {
            "linear": [0.80, 0.40, 0.62],
            "linear_low": [0.75, 0.35, 0.55],
            "linear_high": [0.85, 0.45, 0.70],
            "mlp": [0.8, 0.4, 0.6],
            "head": [np.nan, 0.2, 0.5],
            "shuffled": [0.33, 0.30, 0.36],
        },
        index=["baseline", "confusion", "reversal"],
    )
    floors = {"label_only": {"acc": 0.6}, "chance": {"acc": 1 / 3}}
    lines = center_probes.probe_sentences(table, floors, "baseline")
    assert "above the label-only floor" in lines[0] and "own head" not in lines[0]
    assert "below the label-only floor" in lines[1] and "fooled" in lines[1]  # head 0.2 < chance
    assert "not distinguishable" in lines[2] and "fooled" not in lines[2]
    assert lines[-1].endswith("confusion, reversal.")  # both CIs lie entirely below the baseline's 0.75
