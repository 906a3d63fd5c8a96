"""Evaluation shared by the guided-CNN and MIL notebooks: AUC/F1, seeded bootstrap CIs, paired tests,
silhouette scores and held-out linear probes.

Conventions
    * ``y`` are 0/1 labels, ``score`` the predicted probability (or any monotone score for AUC).
    * Bootstraps resample *rows* (or whole ``groups``, e.g. slides, when given: a cluster bootstrap,
      honest when patches of one slide are correlated) with ``numpy.random.default_rng(seed)``; the
      same seed gives the same resamples, hence the same CI. Resamples that lose a class are dropped
      and counted (``n_valid``).
    * Every p-value comes with a ``test`` string naming the test that produced it.
    * Probes report HELD-OUT scores (cross-validated by group, or on an explicit split); the in-sample
      score is returned next to it only to show the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


# ------------------------------------------------------------------------------------- basic metrics
def _as_binary(y: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    score = np.asarray(score, dtype=float).ravel()
    if y.shape != score.shape:
        raise ValueError(f"labels ({y.size}) and scores ({score.size}) differ in length")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if np.isnan(y).any() or np.isnan(score).any():
        raise ValueError("labels or scores contain NaN; drop unlabeled rows before evaluating")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"labels must be 0/1, got values {np.unique(y)[:5]}")
    return y, score


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count 1/2) for each row of ``weights`` (shape (B, n): row = resample multiplicities).

    NaN for rows without both classes. Cost O(B n), so 1000 bootstrap AUCs of 1000 rows take ~50 ms.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    order = np.argsort(score, kind="stable")
    s, yy, w = score[order], y[order], weights[:, order]
    _, starts = np.unique(s, return_index=True)  # tie groups of equal scores
    pos = np.add.reduceat(w * yy, starts, axis=1)
    neg = np.add.reduceat(w * (1.0 - yy), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def weighted_f1(y: np.ndarray, score: np.ndarray, weights: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """F1 of ``score >= threshold`` for each row of ``weights``; NaN where there are no positives at all."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    predicted = (score >= threshold).astype(float)
    tp = weights @ (y * predicted)
    fp = weights @ ((1.0 - y) * predicted)
    fn = weights @ (y * (1.0 - predicted))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1.0), np.nan)


def weighted_accuracy(
    y: np.ndarray, score: np.ndarray, weights: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Accuracy of ``score >= threshold`` for each row of ``weights``."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    correct = ((score >= threshold).astype(float) == y).astype(float)
    return (weights @ correct) / weights.sum(axis=1)


def weighted_auprc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (area under the precision-recall curve) for each row of ``weights``."""
    from sklearn.metrics import average_precision_score

    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    out = np.full(weights.shape[0], np.nan)
    for i, w in enumerate(weights):
        if (w * y).sum() > 0 and (w * (1 - y)).sum() > 0:
            out[i] = average_precision_score(y, score, sample_weight=w)
    return out


METRICS: dict[str, Callable[..., np.ndarray]] = {
    "auc": weighted_auc,
    "f1": weighted_f1,
    "accuracy": weighted_accuracy,
    "auprc": weighted_auprc,
}
THRESHOLD_METRICS = {"f1", "accuracy"}


def _metric(name: str) -> Callable[..., np.ndarray]:
    if name not in METRICS:
        raise ValueError(f"metric {name!r} is not one of {sorted(METRICS)}")
    return METRICS[name]


def compute_metric(
    metric: str, y: ArrayLike, score: ArrayLike, weights: np.ndarray | None = None, threshold: float = 0.5
) -> np.ndarray:
    """``metric`` ("auc", "f1", "accuracy", "auprc") for each row of ``weights`` (default: all rows once)."""
    y, score = _as_binary(y, score)
    fn = _metric(metric)
    w = np.ones((1, y.size)) if weights is None else weights
    return fn(y, score, w, threshold) if metric in THRESHOLD_METRICS else fn(y, score, w)


def auc(y: ArrayLike, score: ArrayLike) -> float:
    """ROC AUC (NaN when only one class is present)."""
    return float(compute_metric("auc", y, score)[0])


def f1(y: ArrayLike, score: ArrayLike, threshold: float = 0.5) -> float:
    """F1 score of the positive class at ``score >= threshold``."""
    return float(compute_metric("f1", y, score, threshold=threshold)[0])


def binary_metrics(y: ArrayLike, score: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """AUC, F1, accuracy, AUPRC, n and number of positives of one prediction set."""
    y, score = _as_binary(y, score)
    out = {name: float(compute_metric(name, y, score, threshold=threshold)[0]) for name in METRICS}
    out.update(n=int(y.size), n_positive=int(y.sum()))
    return out


def r2(target: ArrayLike, prediction: ArrayLike) -> float:
    """Coefficient of determination on the rows where ``target`` is not NaN (NaN if < 2 such rows)."""
    t = np.asarray(target, dtype=float).ravel()
    p = np.asarray(prediction, dtype=float).ravel()
    keep = np.isfinite(t)
    if keep.sum() < 2:
        return float("nan")
    t, p = t[keep], p[keep]
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return float(1.0 - ((t - p) ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")


def metrics_by_group(
    y: ArrayLike,
    score: ArrayLike,
    by: ArrayLike,
    names: Sequence[str] = ("auc", "f1"),
    n_boot: int = 0,
    seed: int = 0,
    threshold: float = 0.5,
):
    """One row per value of ``by`` (e.g. the split: internal test / external) with n, n_positive and
    each metric; with ``n_boot > 0`` also ``<metric>_low`` / ``<metric>_high`` (seeded bootstrap 95 % CI).
    Rows with a NaN label are dropped. Returns a pandas DataFrame indexed by the group value."""
    import pandas as pd

    y = np.asarray(y, dtype=float).ravel()
    score = np.asarray(score, dtype=float).ravel()
    by = np.asarray(by)
    if not (y.size == score.size == by.shape[0]):
        raise ValueError(f"y ({y.size}), score ({score.size}) and by ({by.shape[0]}) differ in length")
    rows = []
    for group in pd.unique(by):
        keep = (by == group) & np.isfinite(y)
        row: dict[str, float | int | str] = {
            "group": group,
            "n": int(keep.sum()),
            "n_positive": int(y[keep].sum()),
        }
        for name in names:
            if n_boot > 0:
                ci = bootstrap_ci(y[keep], score[keep], name, n_boot=n_boot, seed=seed, threshold=threshold)
                row.update({name: ci["estimate"], f"{name}_low": ci["low"], f"{name}_high": ci["high"]})
            else:
                row[name] = float(compute_metric(name, y[keep], score[keep], threshold=threshold)[0])
        rows.append(row)
    return pd.DataFrame(rows).set_index("group")


# ----------------------------------------------------------------------------------------- bootstrap
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


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
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
    y, score = _as_binary(y, score)
    estimate = float(compute_metric(metric, y, score, threshold=threshold)[0])
    values = compute_metric(metric, y, score, resample_weights(y.size, n_boot, seed, groups), threshold)
    values = values[np.isfinite(values)]
    low, high = _interval(values, level)
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
        _as_binary(y, row)
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
    low, high = _interval(d, level)
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


# -------------------------------------------------------------------------------- representation
def silhouette(
    embeddings: np.ndarray, labels: ArrayLike, sample_size: int | None = 2000, seed: int = 0
) -> float:
    """Mean silhouette score (Euclidean) of ``embeddings`` grouped by ``labels``; subsampled (seeded)
    to ``sample_size`` rows for speed."""
    from sklearn.metrics import silhouette_score

    x = np.asarray(embeddings, dtype=float)
    labels = np.asarray(labels)
    if x.shape[0] != labels.shape[0]:
        raise ValueError(f"{x.shape[0]} embeddings but {labels.shape[0]} labels")
    if np.unique(labels).size < 2:
        raise ValueError("silhouette needs at least two distinct labels")
    size = None if sample_size is None or sample_size >= x.shape[0] else sample_size
    return float(silhouette_score(x, labels, sample_size=size, random_state=seed))


def _probe_folds(
    n: int,
    groups: ArrayLike | None,
    split: ArrayLike | None,
    n_splits: int,
    seed: int,
    stratify: np.ndarray | None,
):
    """List of (fit rows, held-out rows)."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if split is not None:
        split = np.asarray(split)
        if split.shape[0] != n:
            raise ValueError(f"split has {split.shape[0]} entries for {n} rows")
        held_out = split.astype(bool) if split.dtype == bool else split != "train"
        if held_out.all() or not held_out.any():
            raise ValueError("split must mark some rows 'train' (fit) and some held out")
        return [(np.flatnonzero(~held_out), np.flatnonzero(held_out))]
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape[0] != n:
            raise ValueError(f"groups has {groups.shape[0]} entries for {n} rows")
        k = min(n_splits, np.unique(groups).size)
        if k < 2:
            raise ValueError("held-out probing by groups needs >= 2 distinct groups")
        if stratify is not None:
            cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            return list(cv.split(np.zeros(n), stratify, groups))
        return list(GroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), groups=groups))
    if stratify is not None:
        return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(n), stratify))
    return list(KFold(n_splits, shuffle=True, random_state=seed).split(np.zeros(n)))


def probe_r2(
    features: np.ndarray,
    target: ArrayLike,
    groups: ArrayLike | None = None,
    split: ArrayLike | None = None,
    n_splits: int = 5,
    alpha: float = 1.0,
    seed: int = 0,
) -> dict[str, float | int]:
    """Linear probe (standardise + ridge ``alpha``) of a concept from activations (a Regression Concept
    Vector); reports the HELD-OUT R^2 (mean over folds; folds by ``groups``, e.g. slide, or one fit/held-out
    ``split``: booleans True = held out, or strings with "train" = fit) and, for contrast, the in-sample R^2.
    Rows with a NaN target are dropped."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=float)
    t = np.asarray(target, dtype=float).ravel()
    if x.ndim != 2 or x.shape[0] != t.size:
        raise ValueError(f"features must be (n, d) with n = len(target) = {t.size}, got {x.shape}")
    keep = np.isfinite(t)
    x, t = x[keep], t[keep]
    groups = None if groups is None else np.asarray(groups)[keep]
    split = None if split is None else np.asarray(split)[keep]
    scores = []
    for fit_rows, test_rows in _probe_folds(t.size, groups, split, n_splits, seed, None):
        probe = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[fit_rows], t[fit_rows])
        scores.append(r2(t[test_rows], probe.predict(x[test_rows])))
    in_sample = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, t)
    return {
        "r2_heldout": float(np.mean(scores)),
        "r2_heldout_sd": float(np.std(scores)),
        "r2_in_sample": r2(t, in_sample.predict(x)),
        "n_folds": len(scores),
        "n": int(t.size),
    }


def probe_accuracy(
    features: np.ndarray,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    split: ArrayLike | None = None,
    n_splits: int = 5,
    C: float = 1.0,
    seed: int = 0,
) -> dict[str, float | int]:
    """Linear probe (standardise + multinomial logistic regression) of a class (e.g. center) from
    activations: HELD-OUT accuracy, the chance level (the share of the most common class: the accuracy of
    always guessing it), and the in-sample accuracy for contrast. (A per-fold majority guess is no chance
    level with folds by group: held-out slides of a minority class would score it 0.)"""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=float)
    labels = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"features must be (n, d) with n = len(labels) = {labels.shape[0]}, got {x.shape}")
    classes, codes = np.unique(labels, return_inverse=True)
    if classes.size < 2:
        raise ValueError("probe_accuracy needs at least two classes")

    def make_probe():
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))

    correct = total = 0
    folds = _probe_folds(codes.size, groups, split, n_splits, seed, codes if split is None else None)
    for fit_rows, test_rows in folds:
        fit_codes = codes[fit_rows]
        majority = np.bincount(fit_codes, minlength=classes.size).argmax()
        if np.unique(fit_codes).size < 2:
            correct += int((codes[test_rows] == majority).sum())
        else:
            probe = make_probe().fit(x[fit_rows], fit_codes)
            correct += int((probe.predict(x[test_rows]) == codes[test_rows]).sum())
        total += test_rows.size
    in_sample = make_probe().fit(x, codes)
    return {
        "accuracy_heldout": correct / total,
        "chance": float(np.bincount(codes).max() / codes.size),
        "accuracy_in_sample": float((in_sample.predict(x) == codes).mean()),
        "n_classes": int(classes.size),
        "n_folds": len(folds),
        "n": int(codes.size),
    }
