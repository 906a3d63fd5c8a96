"""Representation probes: silhouette scores and held-out linear probes (R^2 of a concept, accuracy of a class).

Probes report HELD-OUT scores (cross-validated by group, or on an explicit split); the in-sample score
is returned next to it only to show the difference.
"""

from __future__ import annotations

import warnings

import numpy as np

from mtlutils.evaluation.metrics import ArrayLike, r2


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


def probe_folds(
    n: int,
    groups: ArrayLike | None,
    split: ArrayLike | None,
    n_splits: int,
    seed: int,
    stratify: np.ndarray | None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """List of (fit rows, held-out rows): the one ``split`` if given, else (stratified) k-fold by ``groups``
    or by row, shuffled with ``seed``."""
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
            with warnings.catch_warnings():
                # a class held by fewer groups than folds cannot be in every fold: stratification is then
                # best effort (sklearn warns once per call); the folds stay grouped and disjoint
                warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
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
    for fit_rows, test_rows in probe_folds(t.size, groups, split, n_splits, seed, None):
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
    folds = probe_folds(codes.size, groups, split, n_splits, seed, codes if split is None else None)
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
