"""Instance-level agreement of a predicted and a true nuclei label image: matches, merges, splits."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["instance_agreement"]


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """``labels`` renumbered to consecutive ids 1..n (0 stays background), and n."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        return inverse.astype(np.int64) + 1, len(ids)
    return inverse.astype(np.int64), len(ids) - 1


def instance_agreement(pred: Any, truth: Any, iou: float = 0.5) -> dict[str, float]:
    """Agreement of two instance label images (0 = background, ids > 0 = nuclei) of the same shape.

    A predicted and a true nucleus *match* when their intersection over union exceeds ``iou`` (the
    usual "IoU ≥ 0.5" rule; strictly above 0.5 a nucleus has at most one match, so no assignment
    problem arises). Returns
    ``n_pred``, ``n_true``, ``matched``, ``precision`` (matched / n_pred), ``recall`` (matched /
    n_true), ``f1``, ``merges`` (predicted nuclei holding most of the pixels of two or more true
    nuclei: touching nuclei taken as one), ``splits`` (true nuclei holding most of the pixels of two
    or more predicted nuclei: one nucleus cut in pieces) and ``missed`` (true nuclei with less than
    half of their pixels inside any predicted nucleus). Precision, recall and F1 are NaN when their
    denominator is 0.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and truth must be 2-D label images of one shape, got {pred.shape} and {truth.shape}"
        )
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(truth.dtype, np.integer)):
        raise ValueError(f"label images must hold integers, got {pred.dtype} and {truth.dtype}")
    if not 0.5 <= iou <= 1.0:
        raise ValueError(f"iou={iou!r} must lie in [0.5, 1] (below 0.5 a nucleus could match twice)")
    p, n_p = _relabel(pred)
    t, n_t = _relabel(truth)
    area_p = np.bincount(p.ravel(), minlength=n_p + 1)
    area_t = np.bincount(t.ravel(), minlength=n_t + 1)
    both = (p > 0) & (t > 0)
    pair, inter = np.unique(p[both] * (n_t + 1) + t[both], return_counts=True)
    pi, ti = pair // (n_t + 1), pair % (n_t + 1)
    union = area_p[pi] + area_t[ti] - inter
    matched = int(np.count_nonzero(inter > iou * union))
    # "most of": more than half of the smaller object's pixels lie in the larger one
    t_in_p = inter * 2 > area_t[ti]  # true nucleus ti lies mostly inside predicted pi
    p_in_t = inter * 2 > area_p[pi]
    merges = int(np.count_nonzero(np.bincount(pi[t_in_p], minlength=n_p + 1) >= 2))
    splits = int(np.count_nonzero(np.bincount(ti[p_in_t], minlength=n_t + 1) >= 2))
    covered = np.bincount(t[both], minlength=n_t + 1)[1:]
    missed = int(np.count_nonzero(covered * 2 < area_t[1:]))

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    precision, recall = ratio(matched, n_p), ratio(matched, n_t)
    f1 = ratio(2 * matched, n_p + n_t)
    return {
        "n_pred": n_p,
        "n_true": n_t,
        "matched": matched,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "merges": merges,
        "splits": splits,
        "missed": missed,
    }
