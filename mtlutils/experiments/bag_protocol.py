"""Paper B's protocol on bags: patient folds, the method table, paired tests and the Friedman ranking.

Folds: patient-level stratified k-fold (the same for every method), each training part split again
into 80 % training and 20 % validation (stratified, early stopping). Internal metrics are per fold
(mean ± sd over folds) and on the pooled out-of-fold predictions (one per patient, bootstrap CI over
patients); the external cohort is scored by the ensemble mean of the fold models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mtlutils.evaluation import bootstrap
from mtlutils.evaluation.metrics import compute_metric

BASELINE = "baseline"


def patient_folds(
    y: np.ndarray, n_folds: int = 5, seed: int = 0, val_fraction: float = 0.2, patients=None
) -> list[dict[str, np.ndarray]]:
    """Stratified k-fold over patients (rows of ``y``) with an inner stratified validation split:
    one ``{"train", "val", "test"}`` dict of row indices per fold. A part with one class is an error."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y = np.asarray(y, int)
    names = np.asarray(patients if patients is not None else np.arange(len(y)).astype(str), dtype=object)
    counts = np.bincount(y, minlength=2)
    if counts.min() < n_folds:
        raise ValueError(
            f"{n_folds} folds need >= {n_folds} patients of each class; the cohort has {counts.tolist()}"
        )
    folds = []
    cv = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    for k, (fit, test) in enumerate(cv.split(np.zeros(len(y)), y)):
        train, val = train_test_split(fit, test_size=val_fraction, stratify=y[fit], random_state=seed + k)
        for part, rows in (("train", train), ("val", val), ("test", test)):
            if np.unique(y[rows]).size < 2:
                raise ValueError(
                    f"fold {k}: the {part} part (patients {', '.join(names[rows][:3])}, …) has one class; "
                    "use fewer folds"
                )
        folds.append({"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)})
    return folds


def split_method(method: str) -> tuple[str, str]:
    """("naive", "none") for "naive/none"; ("-", "-") for the baseline."""
    return ("-", "-") if method == BASELINE else tuple(method.split("/", 1))  # type: ignore[return-value]


def _by_method(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r["method"], []).append(r)
    return out


def oof_scores(runs: Sequence[Mapping[str, Any]], n: int) -> np.ndarray:
    """(seeds, n) out-of-fold probabilities: each patient scored by the model of its test fold."""
    seeds = sorted({r["seed"] for r in runs})
    out = np.full((len(seeds), n), np.nan)
    for r in runs:
        out[seeds.index(r["seed"]), r["test_rows"]] = r["prob"]
    return out


def external_scores(runs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(seeds, n_external) ensemble-mean probability of the fold models, per seed."""
    seeds = sorted({r["seed"] for r in runs})
    return np.stack([np.mean([r["ext_prob"] for r in runs if r["seed"] == s], axis=0) for s in seeds])


def method_table(
    results: Sequence[Mapping[str, Any]],
    y: np.ndarray,
    y_ext: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paper B's Tables 1–2 measured: one row per method with the internal AUROC/AUPRC/F1/Pearson r/
    silhouette (mean and sd over folds), the pooled out-of-fold AUROC, and the external AUROC/AUPRC of
    the fold-model ensemble with a bootstrap CI over patients and the mean external silhouette."""
    rows = []
    for method, runs in _by_method(results).items():
        weighting, grad = split_method(method)
        folds = pd.DataFrame([r["metrics"] for r in runs])
        row: dict[str, Any] = {"method": method, "weighting": weighting, "grad": grad}
        for name in ("auroc", "auprc", "f1", "pearson_r", "silhouette"):
            row[name] = float(folds[name].mean())
            row[f"{name}_sd"] = float(folds[name].std(ddof=1)) if len(folds) > 1 else float("nan")
        row["oof_auroc"] = float(compute_metric("auc", y, oof_scores(runs, len(y)).mean(0))[0])
        if y_ext is not None and len(y_ext):
            ext = external_scores(runs).mean(0)
            ci = bootstrap.bootstrap_ci(y_ext, ext, "auc", n_boot=n_boot, seed=seed)
            row.update(ext_auroc=ci["estimate"], ext_auroc_ci=[ci["low"], ci["high"]])
            row["ext_auprc"] = float(compute_metric("auprc", y_ext, ext)[0])
            row["ext_silhouette"] = float(folds["ext_silhouette"].mean())
        row["epochs"] = float(np.mean([len(r["history"]) for r in runs]))
        row["seconds"] = float(np.mean([r["seconds"] for r in runs]))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_vs_baseline(
    results: Sequence[Mapping[str, Any]],
    y: np.ndarray,
    y_ext: np.ndarray | None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each method minus the baseline on the same folds and patients: the AUROC difference, its CI and
    paired-bootstrap p (patients resampled) for the pooled out-of-fold predictions (internal) and for
    the fold-model ensembles (external); and the mean per-fold difference."""
    by = _by_method(results)
    if BASELINE not in by:
        raise ValueError("the sweep has no baseline runs; add 'baseline' to the methods")
    base = by[BASELINE]
    base_oof, base_fold = (
        oof_scores(base, len(y)),
        {(r["fold"], r["seed"]): r["metrics"]["auroc"] for r in base},
    )
    rows = []
    for method, runs in by.items():
        if method == BASELINE:
            continue
        internal = bootstrap.paired_bootstrap(y, oof_scores(runs, len(y)), base_oof, n_boot=n_boot, seed=seed)
        per_fold = [r["metrics"]["auroc"] - base_fold[(r["fold"], r["seed"])] for r in runs]
        row = {
            "method": method,
            "int_diff": internal["difference"],
            "int_low": internal["low"],
            "int_high": internal["high"],
            "int_p": internal["p_value"],
            "fold_diff": float(np.mean(per_fold)),
            "test": internal["test"],
        }
        if y_ext is not None and len(y_ext):
            ext = bootstrap.paired_bootstrap(
                y_ext, external_scores(runs), external_scores(base), n_boot=n_boot, seed=seed
            )
            row.update(
                ext_diff=ext["difference"], ext_low=ext["low"], ext_high=ext["high"], ext_p=ext["p_value"]
            )
        rows.append(row)
    return pd.DataFrame(rows)


def fold_matrix(results: Sequence[Mapping[str, Any]], metric: str = "auroc") -> pd.DataFrame:
    """(folds x methods) ``metric``, averaged over seeds: the blocks and treatments of the Friedman test."""
    frame = pd.DataFrame(
        [{"method": r["method"], "fold": r["fold"], metric: r["metrics"][metric]} for r in results]
    )
    return frame.pivot_table(index="fold", columns="method", values=metric, aggfunc="mean")


def friedman(
    results: Sequence[Mapping[str, Any]], metric: str = "auroc", alpha: float = 0.05
) -> dict[str, Any]:
    """Friedman test over folds (do the methods differ at all in ``metric``?) with the mean rank of each
    method (1 = best) and the Nemenyi critical difference CD = q_alpha sqrt(k (k + 1) / (6 N))."""
    matrix = fold_matrix(results, metric)
    if matrix.shape[1] < 3 or matrix.shape[0] < 2:
        raise ValueError(
            f"the Friedman test needs >= 3 methods and >= 2 folds, got {matrix.shape[1]} x {matrix.shape[0]}"
        )
    test = stats.friedmanchisquare(*[matrix[c].to_numpy() for c in matrix.columns])
    ranks = matrix.rank(axis=1, ascending=False).mean().sort_values()
    k, n = matrix.shape[1], matrix.shape[0]
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return {
        "statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "n_folds": int(n),
        "n_methods": int(k),
        "mean_ranks": {str(m): float(v) for m, v in ranks.items()},
        "cd": float(q * np.sqrt(k * (k + 1) / (6.0 * n))),
        "test": f"Friedman chi-square over {n} folds x {k} methods ({metric}); Nemenyi CD at alpha={alpha}",
    }


def skip_notes(info: Mapping[str, Any], methods: Sequence[str] = ()) -> dict[str, str]:
    """The steps of notebook 04 this cohort cannot run, each with the note shown instead: ``truth``
    (your own features: no example tiles, card or encoder probe), ``label``, ``joint`` (no TME target:
    the baseline only), ``external``, ``centers`` and ``ranking`` (the Friedman test needs >= 3
    methods). ``info`` is the cohort's ``cohort.json``; the synthetic cohort skips nothing."""
    missing = dict(info.get("missing", {}))
    notes: dict[str, str] = {}
    if info.get("own"):
        notes["truth"] = (
            "your own feature files carry no ground truth and no tile images: the example tiles, the "
            "bag-cohort card (true TME ceiling) and the encoder probe (rendered synthetic slides) are left out."
        )
    if "label" in missing:
        notes["label"] = (
            f"{missing['label']}: without a biomarker label nothing can be trained or scored, so the "
            "sweep, the method table, the tests and the ranking are left out (set TARGET)."
        )
    joint = [m for m in methods if m != BASELINE]
    if "tme" in missing:
        notes["joint"] = (
            f"{missing['tme']}: the [rgr] token and every balancer need the auxiliary TME target, so the "
            f"{len(joint)} joint method(s) of this run are left out and only the single-task [cls] "
            "baseline is trained (set TME to a regression column to compare balancers)."
        )
        joint = []
    if "external" in missing:
        notes["external"] = (
            f"{missing['external']}: internal cross-validation only; the external evaluation (external "
            "AUROC, its paired tests and the external embeddings) is skipped."
        )
    if "center" in missing:
        notes["centers"] = (
            f"{missing['center']}: no per-center parts; the bags are not split by center and no center "
            "can be held out as the external cohort."
        )
    if len(joint) + 1 < 3:
        notes["ranking"] = (
            f"this run compares {len(joint) + 1} method(s); the Friedman test and the mean ranks need "
            "at least 3, so the ranking is left out."
        )
    return notes


def skipped(notes: Mapping[str, str], *steps: str) -> bool:
    """True when this run skips any of ``steps``, after displaying that step's note (a quoted
    "Skipped" paragraph) in the notebook: ``if not skipped(SKIP, "joint"): ...``."""
    for step in steps:
        if step in notes:
            from IPython.display import Markdown, display

            display(Markdown(f"> **Skipped:** {notes[step]}"))
            return True
    return False
