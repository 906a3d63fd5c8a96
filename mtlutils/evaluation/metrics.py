"""Metrics of binary predictions (AUC, F1, accuracy, AUPRC, for one set or weighted resamples), R^2, by group.

Conventions: ``y`` are 0/1 labels, ``score`` the predicted probability (or any monotone score for AUC).
The ``weighted_*`` functions take a (B, n) matrix of row multiplicities (bootstrap resamples, see
:mod:`mtlutils.evaluation.bootstrap`) and return B values at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def as_binary(y: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``y`` and ``score`` as flat float arrays, checked: same length, no NaN, labels 0/1."""
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
    y, score = as_binary(y, score)
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
    y, score = as_binary(y, score)
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

    from mtlutils.evaluation.bootstrap import bootstrap_ci

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
