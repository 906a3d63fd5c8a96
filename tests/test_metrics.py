"""Metrics: AUC/F1 against scikit-learn, seeded bootstrap CIs, paired tests, probes, silhouette."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from mtlutils.evaluation import bootstrap, metrics, probes


def predictions(n: int = 400, signal: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
    return y, score


def test_auc_and_f1_match_sklearn_including_ties_and_weights():
    y, score = predictions()
    tied = np.round(score, 1)  # many ties
    assert metrics.auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert metrics.auc(y, tied) == pytest.approx(roc_auc_score(y, tied), abs=1e-12)
    w = np.random.default_rng(1).integers(0, 4, y.size).astype(float)
    got = metrics.compute_metric("auc", y, tied, weights=w[None, :])[0]
    assert got == pytest.approx(roc_auc_score(y, tied, sample_weight=w), abs=1e-12)
    assert metrics.f1(y, score) == pytest.approx(f1_score(y, score >= 0.5))
    assert metrics.f1(y, score, threshold=0.7) == pytest.approx(f1_score(y, score >= 0.7))
    summary = metrics.binary_metrics(y, score)
    assert summary["auprc"] == pytest.approx(average_precision_score(y, score))
    assert summary["n"] == y.size and summary["n_positive"] == int(y.sum())
    assert np.isnan(metrics.auc(np.ones(5), np.linspace(0, 1, 5)))
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1, np.nan], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="not one of"):
        metrics.compute_metric("kappa", [0, 1], [0.1, 0.2])


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    y, score = predictions()
    ci = bootstrap.bootstrap_ci(y, score, n_boot=500, seed=7)
    assert ci["low"] < ci["estimate"] < ci["high"]
    assert ci["estimate"] == pytest.approx(roc_auc_score(y, score))
    assert 0.02 < ci["high"] - ci["low"] < 0.2
    assert bootstrap.bootstrap_ci(y, score, n_boot=500, seed=7) == ci
    other = bootstrap.bootstrap_ci(y, score, n_boot=500, seed=8)
    assert (other["low"], other["high"]) != (ci["low"], ci["high"])
    f1_ci = bootstrap.bootstrap_ci(y, score, metric="f1", n_boot=300, seed=0)
    assert f1_ci["low"] < f1_ci["estimate"] < f1_ci["high"]
    assert "seed 7" in ci["method"] and ci["n_valid"] == 500


def test_group_bootstrap_resamples_whole_groups_and_is_wider():
    y, score = predictions(n=600)
    groups = np.repeat(np.arange(20), 30)
    score = score + np.repeat(np.random.default_rng(3).normal(0, 0.3, 20), 30)  # correlated within groups
    weights = bootstrap.resample_weights(600, n_boot=50, seed=0, groups=groups)
    assert (weights.reshape(50, 20, 30).std(axis=2) == 0).all()  # each group resampled as a block
    assert np.allclose(weights.sum(axis=1), 600)
    rows = bootstrap.bootstrap_ci(y, score, n_boot=400, seed=0)
    by_group = bootstrap.bootstrap_ci(y, score, n_boot=400, seed=0, groups=groups)
    assert by_group["high"] - by_group["low"] > rows["high"] - rows["low"]
    with pytest.raises(ValueError, match="groups"):
        bootstrap.resample_weights(600, groups=groups[:10])


def test_paired_bootstrap_detects_a_better_predictor_and_not_an_identical_one():
    y, weak = predictions(n=500, signal=0.3, seed=0)
    rng = np.random.default_rng(5)
    strong = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(size=y.size))))
    better = bootstrap.paired_bootstrap(y, strong, weak, n_boot=500, seed=0)
    assert better["difference"] > 0.2 and better["low"] > 0
    assert better["p_value"] < 0.01
    assert "paired bootstrap" in better["test"]
    same = bootstrap.paired_bootstrap(y, weak, weak.copy(), n_boot=500, seed=0)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0
    assert bootstrap.paired_bootstrap(y, strong, weak, n_boot=500, seed=0) == better


def test_paired_bootstrap_averages_seeds_on_the_same_resamples():
    y, weak = predictions(n=400, signal=0.3, seed=0)
    rng = np.random.default_rng(7)
    strong = np.stack([1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(size=y.size)))) for _ in range(3)])
    stacked = bootstrap.paired_bootstrap(y, strong, weak[None, :], n_boot=300, seed=1)
    mean_auc = np.mean([metrics.auc(y, s) for s in strong])
    assert stacked["estimate"] == pytest.approx(mean_auc)  # the mean of the seeds' AUCs, not an ensemble
    assert stacked["n_seeds"] == (3, 1) and "averaged over 3 vs 1 seeds" in stacked["test"]
    assert stacked["p_value"] < 0.01 and stacked["low"] > 0
    single = bootstrap.paired_bootstrap(y, strong[0], weak, n_boot=300, seed=1)
    assert single["estimate"] == pytest.approx(metrics.auc(y, strong[0]))
    with pytest.raises(ValueError, match="seeds, n"):
        bootstrap.paired_bootstrap(y, strong[:, :10], weak)


def test_wilcoxon_paired_by_seed():
    model = [0.83, 0.85, 0.84, 0.86, 0.82, 0.84]
    base = [0.80, 0.81, 0.80, 0.82, 0.81, 0.79]
    result = bootstrap.wilcoxon_paired(model, base)
    assert result["p_value"] == pytest.approx(2 / 2**6)
    assert result["median_difference"] > 0 and "Wilcoxon signed-rank" in result["test"]
    assert bootstrap.wilcoxon_paired(base, base)["p_value"] == 1.0
    three = bootstrap.wilcoxon_paired(model[:3], base[:3])
    assert three["p_value"] == pytest.approx(0.25)  # the floor with 3 seeds
    mixed = bootstrap.wilcoxon_paired([0.8, 0.9, 0.7, 0.85], [0.82, 0.88, 0.71, 0.84])
    assert mixed["p_value"] > 0.5
    with pytest.raises(ValueError, match="pair them"):
        bootstrap.wilcoxon_paired([1, 2, 3], [1, 2])


def test_probe_r2_is_held_out():
    rng = np.random.default_rng(0)
    n, d = 200, 60
    noise = rng.normal(size=(n, d))
    target = rng.normal(size=n)
    result = probes.probe_r2(noise, target, seed=0)
    assert result["r2_in_sample"] > 0.15  # the probe memorises noise...
    assert result["r2_heldout"] < 0.02  # ...but predicts nothing held out
    informative = np.column_stack([target + 0.2 * rng.normal(size=n), noise[:, :5]])
    good = probes.probe_r2(informative, target, groups=np.repeat(np.arange(20), 10))
    assert good["r2_heldout"] > 0.85 and good["n_folds"] == 5
    target_nan = target.copy()
    target_nan[:10] = np.nan
    split = np.where(np.arange(n) < 150, "train", "test")
    one = probes.probe_r2(informative, target_nan, split=split)
    assert one["n"] == n - 10 and one["n_folds"] == 1 and one["r2_heldout"] > 0.8
    with pytest.raises(ValueError, match="split"):
        probes.probe_r2(informative, target, split=np.full(n, "train"))


def test_probe_accuracy_reports_held_out_accuracy_and_chance():
    rng = np.random.default_rng(0)
    center = np.repeat(np.array(["A", "B", "C"]), [100, 60, 40])
    slide = np.repeat(np.arange(20), 10)
    informative = rng.normal(size=(200, 8)) + (center == "B")[:, None] * 2.0 + (center == "C")[:, None] * -2.0
    good = probes.probe_accuracy(informative, center, groups=slide)
    assert good["accuracy_heldout"] > 0.9 and good["n_classes"] == 3
    assert good["chance"] == pytest.approx(0.5, abs=0.15)  # majority class A
    noise = probes.probe_accuracy(rng.normal(size=(200, 40)), center, seed=0)
    assert noise["accuracy_in_sample"] > noise["accuracy_heldout"]
    assert noise["accuracy_heldout"] < noise["chance"] + 0.1


def test_silhouette():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    separated = rng.normal(size=(200, 5)) + labels[:, None] * 10
    assert probes.silhouette(separated, labels) > 0.7
    assert abs(probes.silhouette(rng.normal(size=(200, 5)), labels)) < 0.1
    assert probes.silhouette(separated, labels, sample_size=50, seed=1) > 0.7
    with pytest.raises(ValueError, match="two distinct"):
        probes.silhouette(separated, np.zeros(200))


def test_r2_masks_missing_targets():
    assert metrics.r2([1.0, 2.0, np.nan, 3.0], [1.0, 2.0, 100.0, 3.0]) == pytest.approx(1.0)
    assert np.isnan(metrics.r2([np.nan, 1.0], [0.0, 1.0]))


def test_metrics_by_group():
    y, score = predictions(n=300)
    split = np.where(np.arange(300) < 200, "test", "external")
    table = metrics.metrics_by_group(y, score, split, n_boot=200, seed=0)
    assert list(table.index) == ["test", "external"]
    assert table.loc["test", "n"] == 200
    assert table.loc["external", "auc"] == pytest.approx(roc_auc_score(y[200:], score[200:]))
    assert (table["auc_low"] <= table["auc"]).all() and (table["auc"] <= table["auc_high"]).all()
    plain = metrics.metrics_by_group(y, score, split, names=("f1",))
    assert list(plain.columns) == ["n", "n_positive", "f1"]


def test_balanced_accuracy_and_slide_bootstrap_ci():
    from mtlutils.evaluation import center_probe as cp

    codes = np.array([0] * 8 + [1] * 2)
    always_zero = np.zeros(10, dtype=int)
    assert cp.balanced_accuracy(codes, always_zero)[0] == pytest.approx(0.5)  # plain accuracy would say 0.8
    assert cp.balanced_accuracy(codes, codes)[0] == pytest.approx(1.0)
    slides = np.repeat(np.arange(5), 2)
    noisy = np.where(np.arange(10) % 3 == 0, 1 - codes, codes)
    s = cp.score_predictions(codes, noisy, slides, n_boot=300, seed=1)
    assert s["low"] <= s["acc"] <= s["high"] and s["high"] - s["low"] > 0
    assert s == cp.score_predictions(codes, noisy, slides, n_boot=300, seed=1)  # seeded
