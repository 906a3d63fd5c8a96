"""How much center information is in a representation: fresh probes scored by balanced accuracy, with
slide-bootstrap CIs, floors and controls.

A probe is fitted fold by fold (folds grouped by slide and stratified by center) and predicts the held-out
rows; the score is the **balanced accuracy** (mean recall over centers) of those out-of-fold predictions,
its CI a percentile bootstrap over *slides*. Floors and controls, all scored the same way:

- ``chance`` = 1 / K, the balanced accuracy of any guess that ignores the input;
- ``label_only``: a probe given only the tumour label. Where center and label are confounded, a
  representation that encodes nothing but the label already predicts the center this well;
- ``within``: the probe fitted and scored within tumour patches and within normal patches (no label
  information left to exploit);
- positive control: the same probe on colour statistics (the stain shows the center);
- negative control: centers shuffled *by slide* (each slide keeps one, wrong, center): the probe must fall
  to chance, or the folds leak.
"""

from __future__ import annotations

import numpy as np

from mtlutils.evaluation.bootstrap import percentile_interval, resample_weights
from mtlutils.evaluation.metrics import ArrayLike
from mtlutils.evaluation.probes import probe_folds

PROBE_KINDS = ("linear", "mlp")


def balanced_accuracy(codes: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean recall over the classes present, per row of ``weights`` (B, n) (None: one unweighted value)."""
    codes, pred = np.asarray(codes), np.asarray(pred)
    w = np.ones((1, codes.size)) if weights is None else np.atleast_2d(weights)
    recalls = []
    for k in np.unique(codes):
        is_k = codes == k
        total = w[:, is_k].sum(1)
        hit = w[:, is_k & (pred == k)].sum(1)
        recalls.append(np.where(total > 0, hit / np.where(total > 0, total, 1), np.nan))
    return np.nanmean(np.stack(recalls), axis=0)


def _make_probe(kind: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear":
        model = LogisticRegression(C=1.0, max_iter=2000)
    elif kind == "mlp":
        model = MLPClassifier((64,), alpha=1e-3, max_iter=400, random_state=seed)
    else:
        raise ValueError(f"probe kind {kind!r} is not one of {PROBE_KINDS}")
    return make_pipeline(StandardScaler(), model)


def out_of_fold(
    features: np.ndarray,
    codes: np.ndarray,
    groups: np.ndarray,
    kind: str = "linear",
    n_splits: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Held-out class predictions of a fresh probe, folds grouped by ``groups`` and stratified by class
    (at most as many folds as the rarest class has groups, at least 2); a fold whose fitting rows hold one
    class predicts that class."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    pred = np.full(codes.size, -1)
    groups = np.asarray(groups)
    per_class = min(np.unique(groups[codes == k]).size for k in np.unique(codes))
    k = max(2, min(n_splits, per_class))
    for fit_rows, test_rows in probe_folds(codes.size, groups, None, k, seed, codes):
        if np.unique(codes[fit_rows]).size < 2:
            pred[test_rows] = codes[fit_rows][0]
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = _make_probe(kind, seed).fit(features[fit_rows], codes[fit_rows])
        pred[test_rows] = probe.predict(features[test_rows])
    return pred


def score_predictions(
    codes: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | int]:
    """Balanced accuracy of ``pred`` ((n,) or (seeds, n): averaged over seeds on the same resamples) and
    its percentile CI over a bootstrap of whole ``groups`` (slides)."""
    preds = np.atleast_2d(pred)
    weights = resample_weights(codes.size, n_boot, seed, groups)
    boot = np.mean([balanced_accuracy(codes, p, weights) for p in preds], axis=0)
    boot = boot[np.isfinite(boot)]
    low, high = percentile_interval(boot, level)
    acc = float(np.mean([balanced_accuracy(codes, p)[0] for p in preds]))
    # a percentile interval of a skewed statistic may miss its point estimate; widen it to contain it
    return {"acc": acc, "low": float(min(low, acc)), "high": float(max(high, acc)), "n_boot": int(boot.size)}


def center_probe(
    features: ArrayLike,
    centers: ArrayLike,
    slides: ArrayLike,
    kind: str = "linear",
    n_splits: int = 5,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """Balanced accuracy (held-out, slide-grouped folds) of a ``kind`` probe predicting the center from
    ``features`` (n, d), with its slide-bootstrap CI, the chance level 1/K and the counts."""
    x = np.asarray(features, dtype=float)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    centers, slides = np.asarray(centers), np.asarray(slides)
    if x.shape[0] != centers.size or slides.size != centers.size:
        raise ValueError(
            f"features ({x.shape[0]}), centers ({centers.size}) and slides ({slides.size}) differ"
        )
    classes, codes = np.unique(centers, return_inverse=True)
    if classes.size < 2:
        raise ValueError("a center probe needs at least two centers among the rows")
    pred = out_of_fold(x, codes, slides, kind, n_splits, seed)
    out = score_predictions(codes, pred, slides, n_boot, seed)
    out.update(chance=1.0 / classes.size, n=int(codes.size), n_slides=int(np.unique(slides).size), kind=kind)
    return out


def shuffle_by_slide(centers: ArrayLike, slides: ArrayLike, seed: int = 0, tries: int = 200) -> np.ndarray:
    """Centers permuted among slides (every patch of a slide gets the same, shuffled, center); of ``tries``
    seeded permutations the one least associated with the true centers (smallest sum of squared counts of
    the true x shuffled table), so that no relabelling of the true centers survives the shuffle."""
    centers, slides = np.asarray(centers), np.asarray(slides)
    names, first = np.unique(slides, return_index=True)
    own, rng = centers[first], np.random.default_rng(seed)
    _, own_codes = np.unique(own, return_inverse=True)
    k = own_codes.max() + 1

    def association(perm: np.ndarray) -> int:
        return int((np.bincount(own_codes * k + own_codes[perm], minlength=k * k) ** 2).sum())

    order = min((rng.permutation(own.size) for _ in range(tries)), key=association)
    shuffled = own[order]
    lookup = dict(zip(names, shuffled, strict=True))
    return np.array([lookup[s] for s in slides])


def one_hot(labels: ArrayLike) -> np.ndarray:
    """(n, C) indicator columns of ``labels`` (the label-only probe's input)."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return np.eye(int(codes.max()) + 1)[codes]


def within_class(
    features: ArrayLike,
    centers: ArrayLike,
    slides: ArrayLike,
    labels: ArrayLike,
    kind: str = "linear",
    seed: int = 0,
    n_boot: int = 200,
) -> dict[str, dict]:
    """:func:`center_probe` fitted and scored separately within each label value (e.g. tumour, normal);
    a label value with patches from fewer than two centers is left out."""
    x, labels = np.asarray(features, dtype=float), np.asarray(labels)
    centers, slides = np.asarray(centers), np.asarray(slides)
    out = {}
    for value in np.unique(labels):
        rows = labels == value
        if np.unique(centers[rows]).size >= 2 and np.unique(slides[rows]).size >= 2:
            out[str(value)] = center_probe(
                x[rows], centers[rows], slides[rows], kind, seed=seed, n_boot=n_boot
            )
    return out
