"""Seeded bootstrap CIs, paired bootstrap comparisons and the Wilcoxon signed-rank test of paired values.

Bootstraps resample *rows* (or whole ``groups``, e.g. slides, when given: a cluster bootstrap, honest
when patches of one slide are correlated) with ``numpy.random.default_rng(seed)``; the same seed gives
the same resamples, hence the same CI. Resamples that lose a class are dropped and counted
(``n_valid``). Every p-value comes with a ``test`` string naming the test that produced it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from mtlutils.evaluation.metrics import ArrayLike, as_binary, compute_metric


def resample_weights(
    n: int, n_boot: int = 1000, seed: int = 0, groups: ArrayLike | None = None
) -> np.ndarray:
    """(n_boot, n) multiplicities of a bootstrap of ``n`` rows (or of whole ``groups``), seeded."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    groups = np.asarray(groups)
    if groups.shape[0] != n:
        raise ValueError(f"groups has {groups.shape[0]} entries for {n} rows")
    _, index = np.unique(groups, return_inverse=True)
    n_groups = int(index.max()) + 1
    group_counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(float)
    return group_counts[:, index]


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` percentile interval of bootstrap ``values`` (NaN, NaN when there are none)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(
    y: ArrayLike,
    score: ArrayLike,
    metric: str = "auc",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: ArrayLike | None = None,
    threshold: float = 0.5,
) -> dict[str, float | int | str]:
    """Point estimate and percentile bootstrap CI of ``metric`` from stored predictions (seeded)."""
    y, score = as_binary(y, score)
    estimate = float(compute_metric(metric, y, score, threshold=threshold)[0])
    values = compute_metric(metric, y, score, resample_weights(y.size, n_boot, seed, groups), threshold)
    values = values[np.isfinite(values)]
    low, high = percentile_interval(values, level)
    return {
        "metric": metric,
        "estimate": estimate,
        "low": low,
        "high": high,
        "level": level,
        "n_boot": n_boot,
        "n_valid": int(values.size),
        "method": f"percentile bootstrap ({'groups' if groups is not None else 'rows'}, seed {seed})",
    }


def _seed_rows(y: np.ndarray, score: ArrayLike, what: str) -> np.ndarray:
    """``score`` as (S, n): one row per seed (a 1-D score is one seed)."""
    s = np.atleast_2d(np.asarray(score, dtype=float))
    if s.ndim != 2 or s.shape[1] != y.size:
        raise ValueError(f"{what} must be (n,) or (seeds, n) with n = {y.size} labels, got {np.shape(score)}")
    for row in s:
        as_binary(y, row)
    return s


def _mean_metric(
    metric: str, y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None, threshold: float
) -> np.ndarray:
    return np.mean([compute_metric(metric, y, row, weights, threshold) for row in scores], axis=0)


def paired_bootstrap(
    y: ArrayLike,
    score: ArrayLike,
    baseline_score: ArrayLike,
    metric: str = "auc",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: ArrayLike | None = None,
    threshold: float = 0.5,
) -> dict[str, float | int | str]:
    """Compare ``score`` with ``baseline_score`` on the SAME resamples of the same rows.

    Scores are (n,) or (seeds, n): with several seeds (rows), each resample's metric is the mean over
    the seeds of model and baseline (seed counts may differ), so the test is about the *method*, not
    one training. Returns the difference (model - baseline), its CI and a two-sided p-value
    2 * min(P(d <= 0), P(d >= 0)) with the +1 correction (never exactly 0; 1 for identical predictors).
    """
    y = np.asarray(y, dtype=float).ravel()
    a_scores = _seed_rows(y, score, "score")
    b_scores = _seed_rows(y, baseline_score, "baseline_score")
    weights = resample_weights(y.size, n_boot, seed, groups)
    d = _mean_metric(metric, y, a_scores, weights, threshold) - _mean_metric(
        metric, y, b_scores, weights, threshold
    )
    d = d[np.isfinite(d)]
    low, high = percentile_interval(d, level)
    n = d.size
    p = (
        min(1.0, 2 * min((np.sum(d <= 0) + 1) / (n + 1), (np.sum(d >= 0) + 1) / (n + 1)))
        if n
        else float("nan")
    )
    est_a = float(_mean_metric(metric, y, a_scores, None, threshold)[0])
    est_b = float(_mean_metric(metric, y, b_scores, None, threshold)[0])
    unit = f"{'clusters' if groups is not None else 'rows'}"
    return {
        "metric": metric,
        "estimate": est_a,
        "baseline": est_b,
        "difference": est_a - est_b,
        "low": low,
        "high": high,
        "level": level,
        "p_value": float(p),
        "n_boot": n_boot,
        "n_valid": int(n),
        "n_seeds": (int(a_scores.shape[0]), int(b_scores.shape[0])),
        "test": (
            f"paired bootstrap of the {metric} difference over {unit}, two-sided ({n} resamples, seed {seed}"
            + (
                f", {metric} averaged over {a_scores.shape[0]} vs {b_scores.shape[0]} seeds)"
                if max(a_scores.shape[0], b_scores.shape[0]) > 1
                else ")"
            )
        ),
    }


def wilcoxon_paired(
    values: ArrayLike, baseline_values: ArrayLike, alternative: str = "two-sided"
) -> dict[str, float | int | str]:
    """Wilcoxon signed-rank test of paired values (e.g. one AUC per seed for a model and the baseline).

    With n pairs the smallest possible two-sided p is 2 / 2^n (0.25 for 3 seeds, 0.0625 for 5).
    """
    a = np.asarray(values, dtype=float).ravel()
    b = np.asarray(baseline_values, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length ({a.size} vs {b.size}); pair them by seed")
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the Wilcoxon test needs >= 2 finite pairs")
    d = a - b
    test = f"Wilcoxon signed-rank, paired, {alternative} (n={a.size})"
    if np.all(d == 0):
        return {"statistic": 0.0, "p_value": 1.0, "n": int(a.size), "median_difference": 0.0, "test": test}
    result = stats.wilcoxon(a, b, alternative=alternative)
    return {
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
        "n": int(a.size),
        "median_difference": float(np.median(d)),
        "test": test,
    }
