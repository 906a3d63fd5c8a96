"""Concept probes (regression concept vectors): ridge with cross-validated alpha, held-out R^2 by slide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mtlutils.evaluation.bootstrap import percentile_interval, resample_weights
from mtlutils.evaluation.probes import probe_folds

ALPHAS = tuple(10.0 ** np.arange(-2, 5))  #: ridge strengths the inner cross-validation chooses from


def _ridge(x: np.ndarray, t: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge on standardised x in closed form, returned in x units: (mean / scale, weights, intercept)."""
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (t - t.mean()))
    return mean / scale, w / scale, float(t.mean() - (mean / scale) @ w)


def _predict(model: tuple, x: np.ndarray) -> np.ndarray:
    _, w, b = model
    return x @ w + b


def choose_alpha(
    x: np.ndarray, t: np.ndarray, groups: np.ndarray, alphas: Sequence[float] = ALPHAS, seed: int = 0
) -> float:
    """The ``alphas`` value with the smallest squared error in an inner k-fold grouped by ``groups``
    (fitting rows only: the held-out rows of the outer fold never choose it)."""
    folds = probe_folds(t.size, groups, None, 3, seed, None) if np.unique(groups).size >= 2 else []
    if not folds:
        return float(alphas[len(alphas) // 2])
    errors = [
        sum(float(((_predict(_ridge(x[f], t[f], a), x[h]) - t[h]) ** 2).sum()) for f, h in folds)
        for a in alphas
    ]
    return float(alphas[int(np.argmin(errors))])


def out_of_fold(
    features, target, groups, n_splits: int = 5, alphas: Sequence[float] = ALPHAS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions of ``target`` (NaN where the target is NaN): each row is predicted by a
    ridge fitted on the other folds (grouped by ``groups``, e.g. slides), its alpha chosen inside those
    folds. Returns (predictions, chosen alpha per fold)."""
    x, t = np.asarray(features, dtype=float), np.asarray(target, dtype=float).ravel()
    groups = np.asarray(groups)
    if x.ndim != 2 or x.shape[0] != t.size or groups.size != t.size:
        raise ValueError(f"features {x.shape}, target ({t.size}) and groups ({groups.size}) differ")
    keep = np.flatnonzero(np.isfinite(t))
    pred, chosen = np.full(t.size, np.nan), []
    for fit, held in probe_folds(keep.size, groups[keep], None, n_splits, seed, None):
        f, h = keep[fit], keep[held]
        alpha = choose_alpha(x[f], t[f], groups[f], alphas, seed)
        pred[h] = _predict(_ridge(x[f], t[f], alpha), x[h])
        chosen.append(alpha)
    return pred, np.array(chosen)


def r2_weighted(t: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """R^2 of ``pred`` per row of ``weights`` (B, n): 1 - SS_res / SS_tot with weighted sums."""
    w = np.atleast_2d(weights)
    total = w.sum(1)
    mean = (w * t).sum(1) / total
    ss_tot = (w * (t[None, :] - mean[:, None]) ** 2).sum(1)
    ss_res = (w * (t - pred) ** 2).sum(1)
    return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)


def probe_r2(
    features,
    target,
    groups,
    n_splits: int = 5,
    n_boot: int = 200,
    seed: int = 0,
    alphas: Sequence[float] = ALPHAS,
) -> dict[str, float]:
    """Held-out R^2 of a ridge probe (pooled over the out-of-fold predictions of folds grouped by
    slide) with a percentile CI over a bootstrap of whole slides, the median chosen alpha and, for
    contrast only, the in-sample R^2 of a ridge fitted and scored on the same rows."""
    x, t, groups = np.asarray(features, dtype=float), np.asarray(target, dtype=float), np.asarray(groups)
    pred, chosen = out_of_fold(x, t, groups, n_splits, alphas, seed)
    keep = np.isfinite(t)
    t, pred, g, x = t[keep], pred[keep], groups[keep], x[keep]
    r2 = float(r2_weighted(t, pred, np.ones(t.size))[0])
    boot = r2_weighted(t, pred, resample_weights(t.size, n_boot, seed, g))
    low, high = percentile_interval(boot[np.isfinite(boot)], 0.95)
    alpha = float(np.median(chosen))
    in_sample = float(r2_weighted(t, _predict(_ridge(x, t, alpha), x), np.ones(t.size))[0])
    return {
        "r2": r2,
        "low": min(low, r2),
        "high": max(high, r2),
        "alpha": alpha,
        "r2_in_sample": in_sample,
        "n": int(t.size),
        "n_slides": int(np.unique(g).size),
    }


def probe_table(
    activations: Mapping[str, Mapping[str, np.ndarray]],
    concepts: Mapping[str, np.ndarray],
    groups,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (model, layer, concept) of ``activations`` ({model: {layer: (n, d)}}) and ``concepts``
    ({name: (n,)}): :func:`probe_r2`'s numbers, all on the same rows and slide-grouped folds."""
    rows = []
    for model, layers in activations.items():
        for layer, x in layers.items():
            for name, t in concepts.items():
                rows.append(
                    {
                        "model": model,
                        "layer": layer,
                        "concept": name,
                        **probe_r2(x, t, groups, n_boot=n_boot, seed=seed),
                    }
                )
    return pd.DataFrame(rows)


def nested(table: pd.DataFrame, column: str = "r2") -> dict:
    """{model: {layer: {concept: value}}} of ``column`` (a [low, high] pair for column "ci")."""
    out: dict = {}
    for r in table.itertuples():
        value = [r.low, r.high] if column == "ci" else getattr(r, column)
        out.setdefault(r.model, {}).setdefault(r.layer, {})[r.concept] = value
    return out
