"""The cohort card: how hard the tumour task is, measured from the ground truth and simple classifiers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.data.index import read_patch_index
from mtlutils.synthetic.truth import patch_dir_ground_truth, patch_dir_true_labels

#: the four true per-patch nuclei features of the morphology oracle (count: nuclei per mm² of tissue,
#: area: mean µm², area_cv, intensity: mean relative hematoxylin load)
ORACLE_FEATURES = ("count", "area", "area_cv", "intensity")
COLOUR_FEATURES = ("mean_r", "mean_g", "mean_b", "od_r", "od_g", "od_b")
TRAIN_POOL = ("train", "val")

#: pre-registered bands (issue 8): key -> (low, high), None where open
BANDS: dict[str, tuple[float | None, float | None]] = {
    "oracle_auc": (0.85, 0.92),
    "best_single_feature_auc": (None, 0.82),
    "colour_within_center_control_auc": (None, 0.70),
    "colour_internal_auc": (0.80, None),
    "colour_external_auc": (None, 0.65),
    "center_only_auc": (0.80, None),
    "label_noise": (0.05, 0.15),
    "mimic_fraction": (0.20, None),
    "n_tumour_slides_test": (10, None),
    "n_tumour_slides_external": (10, None),
}


def colour_features(patch_dir: str | os.PathLike) -> pd.DataFrame:
    """Mean R, G, B (0..255) and mean optical density per channel (-ln((I + 1) / 256)) of every patch
    of ``patch_dir/index.csv`` (same order): the 6 numbers of the colour-only classifier."""
    import h5py

    folder = Path(patch_dir).expanduser()
    index = read_patch_index(folder, required=("file", "row"))
    out = np.full((len(index), 6), np.nan)
    for file, group in index.groupby("file", sort=False):
        with h5py.File(folder / str(file), "r") as h5:
            images = h5["images"]
            for start in range(0, len(images), 64):
                block = images[start : start + 64].astype(np.float64)
                rows = np.arange(start, start + len(block))
                sel = group["row"].isin(rows).to_numpy()
                if not sel.any():
                    continue
                local = group.loc[sel, "row"].to_numpy() - start
                rgb = block[local].reshape(len(local), -1, 3)
                od = -np.log((rgb + 1.0) / 256.0)
                out[group.index[sel]] = np.column_stack([rgb.mean(axis=1), od.mean(axis=1)])
    return pd.DataFrame(out, columns=list(COLOUR_FEATURES), index=index.index)


def _classifier() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def _fit_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray | None:
    """Tumour probability of ``x_test`` from a standardised logistic regression (None: one class)."""
    if len(np.unique(y_train)) < 2 or len(x_test) == 0:
        return None
    return _classifier().fit(x_train, y_train).predict_proba(x_test)[:, 1]


def _auc(y: np.ndarray, score: np.ndarray | None) -> float:
    from mtlutils.evaluation.metrics import auc

    if score is None or len(np.unique(y)) < 2:
        return float("nan")
    return float(auc(y, score))


def _fill(x: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Features with NaN (e.g. the area CV of a patch with < 2 nuclei) set to the reference median."""
    return x.fillna(reference.median()).fillna(0.0).to_numpy(np.float64)


def _grouped_oof(x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_folds: int = 5) -> np.ndarray:
    """Out-of-fold tumour probabilities with slide-grouped folds (NaN where a fold could not be fitted)."""
    from sklearn.model_selection import GroupKFold

    score = np.full(len(y), np.nan)
    k = min(n_folds, len(np.unique(groups)))
    if k < 2:
        return score
    for train, test in GroupKFold(n_splits=k).split(x, y, groups):
        pred = _fit_score(x[train], y[train], x[test])
        if pred is not None:
            score[test] = pred
    return score


def _patches(patch_dir: str | os.PathLike, cohort_dir: str | os.PathLike) -> pd.DataFrame:
    """Index + true nuclei features + true labels + colour features, one row per labelled patch."""
    index = read_patch_index(patch_dir, required=("slide_id", "center", "split", "label", "file", "row"))
    fraction = index["tissue_fraction"] if "tissue_fraction" in index.columns else None
    truth = patch_dir_ground_truth(patch_dir, cohort_dir, tissue_fraction=fraction)
    labels = patch_dir_true_labels(patch_dir, cohort_dir)
    table = pd.concat([index, truth[list(ORACLE_FEATURES)], labels, colour_features(patch_dir)], axis=1)
    return table[table["label"].notna()].reset_index(drop=True)


def _in_band(value: float, band: tuple[float | None, float | None]) -> bool:
    lo, hi = band
    return bool(np.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi))


def _generator_hash(cohort_dir: str | os.PathLike) -> str | None:
    path = Path(cohort_dir).expanduser() / "cohort.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("generator_hash")


def _n_tumour_slides(cohort_dir: str | os.PathLike, split: str) -> int:
    manifest = pd.read_csv(Path(cohort_dir).expanduser() / "manifest.csv")
    return int(((manifest["split"] == split) & (manifest["has_tumour"] == 1)).sum())


def cohort_card(
    patch_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    control_patch_dir: str | os.PathLike,
    control_cohort_dir: str | os.PathLike,
    seed: int = 0,
) -> dict[str, Any]:
    """The cohort card of a tiled synthetic cohort and its tiled control twin (see :data:`BANDS`).

    Classifiers (standardised logistic regressions) are trained on the index's ``label`` (from the
    annotation XML, what a model is trained on) of the training pool (train + val of the training
    centers) and scored against ``true_label`` (the exact regions). AUCs are
    :func:`mtlutils.evaluation.metrics.auc`; NaN where a class is missing. ``seed`` is recorded (the
    classifiers are deterministic). Returns the figures, ``bands``, ``in_band`` and ``generator_hash``.
    """
    cohort = _patches(patch_dir, cohort_dir)
    pool = cohort[cohort["split"].isin(TRAIN_POOL)]
    test = cohort[cohort["split"] == "test"]
    external = cohort[cohort["split"] == "external"]
    y_pool = pool["label"].to_numpy(int)
    y_test = test["true_label"].to_numpy(int)
    y_ext = external["true_label"].to_numpy(int)
    morph = list(ORACLE_FEATURES)
    colour = list(COLOUR_FEATURES)

    card: dict[str, Any] = {}
    card["oracle_auc"] = _auc(
        y_test, _fit_score(_fill(pool[morph], pool[morph]), y_pool, _fill(test[morph], pool[morph]))
    )
    single = {}
    for name in morph:
        value = _auc(y_test, _fill(test[[name]], pool[[name]])[:, 0])
        single[name] = max(value, 1.0 - value) if np.isfinite(value) else value
    card["single_feature_auc"] = single
    card["best_single_feature_auc"] = float(np.nanmax(list(single.values()))) if single else float("nan")

    x_pool = _fill(pool[colour], pool[colour])
    card["colour_internal_auc"] = _auc(y_test, _fit_score(x_pool, y_pool, _fill(test[colour], pool[colour])))
    card["colour_external_auc"] = _auc(
        y_ext, _fit_score(x_pool, y_pool, _fill(external[colour], pool[colour]))
    )

    rate = pool.groupby("center")["label"].mean()
    card["center_tumour_rate"] = {str(k): float(v) for k, v in rate.items()}
    card["center_only_auc"] = _auc(y_pool, pool["center"].map(rate).to_numpy(float))

    control = _patches(control_patch_dir, control_cohort_dir)
    control = control[control["split"] != "external"]
    per_center = {}
    for center, group in control.groupby("center"):
        x = _fill(group[colour], group[colour])
        score = _grouped_oof(x, group["label"].to_numpy(int), group["slide_id"].to_numpy())
        ok = np.isfinite(score)
        per_center[str(center)] = _auc(group["true_label"].to_numpy(int)[ok], score[ok])
    card["colour_within_center_control_by_center"] = per_center
    finite = [v for v in per_center.values() if np.isfinite(v)]
    card["colour_within_center_control_auc"] = float(max(finite)) if finite else float("nan")

    train_centers = cohort[cohort["split"] != "external"]
    card["label_noise"] = float((pool["label"].to_numpy(int) != pool["true_label"].to_numpy(int)).mean())
    normal = train_centers[train_centers["true_label"] == 0]
    card["mimic_fraction"] = float(normal["has_mimic"].mean()) if len(normal) else float("nan")
    card["n_tumour_slides_test"] = _n_tumour_slides(cohort_dir, "test")
    card["n_tumour_slides_external"] = _n_tumour_slides(cohort_dir, "external")
    card["n_patches"] = {str(k): int(v) for k, v in cohort["split"].value_counts().sort_index().items()}
    card["seed"] = int(seed)
    card["generator_hash"] = _generator_hash(cohort_dir)
    card["bands"] = {k: list(v) for k, v in BANDS.items()}
    card["in_band"] = {k: _in_band(float(card[k]), band) for k, band in BANDS.items()}
    return card


def format_card(card: dict[str, Any]) -> str:
    """The card's banded figures as aligned lines ``key  value  [lo, hi]  ok``."""
    lines = []
    for key, (lo, hi) in BANDS.items():
        band = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
        ok = "ok" if card["in_band"][key] else "OUT"
        lines.append(f"{key:34s} {float(card[key]):8.3f}  {band:14s} {ok}")
    return "\n".join(lines)


def card_table(card: dict[str, Any]) -> pd.DataFrame:
    """The card's banded figures as a table: index ``key``; columns ``value``, ``band`` (text),
    ``in band``."""
    rows = []
    for key, (lo, hi) in BANDS.items():
        band = f"≥ {lo}" if hi is None else f"≤ {hi}" if lo is None else f"{lo} – {hi}"
        rows.append(
            {"key": key, "value": float(card[key]), "band": band, "in band": bool(card["in_band"][key])}
        )
    return pd.DataFrame(rows).set_index("key")


def plot_card(card: dict[str, Any], name: str | None = None) -> Any:
    """One small panel per banded figure: the band shaded green, the value a dot (black in band, red
    out of it)."""
    from mtlutils.plotting import panel_grid, save_figure

    fig, axes = panel_grid(len(BANDS), ncols=5, size=2.4)
    for ax, (key, (lo, hi)) in zip(axes, BANDS.items(), strict=True):
        value = float(card[key])
        if key.startswith("n_"):
            top = max(20.0, 1.2 * value if np.isfinite(value) else 0.0)
            limits = (0.0, top)
        elif key.endswith("_auc"):
            limits = (0.4, 1.0)
        else:
            limits = (0.0, max(0.4, 1.2 * value if np.isfinite(value) else 0.0))
        ax.axvspan(
            limits[0] if lo is None else lo, limits[1] if hi is None else hi, color="tab:green", alpha=0.25
        )
        ax.plot([value], [0], "o", color="black" if card["in_band"][key] else "tab:red", markersize=8)
        ax.set_xlim(*limits)
        ax.set_yticks([])
        ax.set_title(f"{key}\n{value:.3g}", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
