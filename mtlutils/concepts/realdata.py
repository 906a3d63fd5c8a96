"""Real annotated nuclei (a CoNSeP-style folder): reading, the fixed calibration/held-out split, scoring.

The folder holds ``images/NAME.jpg`` (RGB H&E crops) and ``inst/NAME.npz`` (array ``inst``: an
instance map, 0 = background, k > 0 = nucleus k). ``NAME`` is ``SOURCE_NNN``: crop NNN of source
image SOURCE. The split is by source image, so crops of one image never sit on both sides: a
source is *held out* when the SHA-1 of its name is 0 modulo 3 (a fixed rule, about a third of the
sources). Parameters are chosen on the calibration part; only held-out figures are results.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtlutils.concepts.instances import instance_agreement
from mtlutils.concepts.params import DEFAULT_PARAMS, SegmentationParams

__all__ = [
    "REAL_NUCLEI_MPP",
    "default_real_nuclei_dir",
    "real_nuclei_names",
    "source_of",
    "is_held_out",
    "load_real_patch",
    "score_real_nuclei",
    "summarise_real_nuclei",
]

REAL_NUCLEI_MPP = 0.25  #: µm per pixel of the CoNSeP crops (40x)


def default_real_nuclei_dir() -> Path:
    """``../shared/data/consep-train`` relative to the repository root (it may not exist)."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "consep-train"


def real_nuclei_names(root: str | os.PathLike, split: str = "all") -> list[str]:
    """Sorted patch names in ``root`` that have both an image and an instance map; ``split`` is
    ``"all"``, ``"calibration"`` or ``"held_out"``."""
    if split not in ("all", "calibration", "held_out"):
        raise ValueError(f"split={split!r}; use 'all', 'calibration' or 'held_out'")
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "inst").is_dir():
        raise FileNotFoundError(f"{root} lacks images/ and inst/; expected a CoNSeP-style folder")
    names = sorted(
        p.stem for p in (root / "images").glob("*.jpg") if (root / "inst" / f"{p.stem}.npz").is_file()
    )
    if split == "all":
        return names
    return [n for n in names if is_held_out(n) == (split == "held_out")]


def source_of(name: str) -> str:
    """The source image of a crop name ``SOURCE_NNN`` (the name itself when it has no ``_NNN``)."""
    head, _, tail = name.rpartition("_")
    return head if head and tail.isdigit() else name


def is_held_out(name: str) -> bool:
    """Whether crop ``name`` belongs to the held-out part (SHA-1 of its source image name ≡ 0 mod 3)."""
    return int(hashlib.sha1(source_of(name).encode()).hexdigest(), 16) % 3 == 0


def load_real_patch(root: str | os.PathLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image, int32 instance map) of crop ``name`` in ``root``."""
    from PIL import Image

    root = Path(root)
    with Image.open(root / "images" / f"{name}.jpg") as img:
        image = np.asarray(img.convert("RGB"), dtype=np.uint8)
    with np.load(root / "inst" / f"{name}.npz") as z:
        inst = np.asarray(z["inst"]).astype(np.int32)
    if inst.shape != image.shape[:2]:
        raise ValueError(f"{name}: instance map {inst.shape} does not match image {image.shape[:2]}")
    return image, inst


def _score_one(root: str, name: str, mpp: float, params: SegmentationParams) -> dict[str, object]:
    """Segment one crop and compare it with its instance map (a worker of :func:`score_real_nuclei`)."""
    from mtlutils.concepts.segment import segment_nuclei

    image, inst = load_real_patch(root, name)
    pred = segment_nuclei(image, mpp, params)
    row: dict[str, object] = {"name": name, "source": source_of(name), "held_out": is_held_out(name)}
    row.update(instance_agreement(pred, inst))
    return row


def score_real_nuclei(
    root: str | os.PathLike,
    names: list[str],
    params: SegmentationParams = DEFAULT_PARAMS,
    mpp: float = REAL_NUCLEI_MPP,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per crop: name, source, held_out and the fields of :func:`instance_agreement`
    (predicted vs annotated nuclei), plus ``ratio`` = n_pred / n_true (NaN without true nuclei)."""
    from mtlutils.core.parallel import parallel_map

    jobs = [(str(root), n, float(mpp), params) for n in names]
    rows = parallel_map(_score_one, jobs, workers=workers, desc="real nuclei")
    table = pd.DataFrame(list(rows))
    table["ratio"] = table["n_pred"] / table["n_true"].where(table["n_true"] > 0)
    return table


def summarise_real_nuclei(table: pd.DataFrame) -> dict[str, float]:
    """``spearman`` (predicted vs true count over crops), ``median_ratio``, ``n`` (crops),
    ``f1_iou50`` (F1 of the pooled matches at IoU ≥ 0.5), and the pooled merges, splits and misses."""
    from scipy.stats import spearmanr

    if len(table) < 3:
        raise ValueError(f"need at least 3 scored crops to summarise, got {len(table)}")
    rho = float(spearmanr(table["n_pred"], table["n_true"]).statistic)
    pooled = 2 * table["matched"].sum() / max(1, table["n_pred"].sum() + table["n_true"].sum())
    return {
        "spearman": rho,
        "median_ratio": float(np.nanmedian(table["ratio"])),
        "n": int(len(table)),
        "f1_iou50": float(pooled),
        "precision": float(table["matched"].sum() / max(1, table["n_pred"].sum())),
        "recall": float(table["matched"].sum() / max(1, table["n_true"].sum())),
        "merges": int(table["merges"].sum()),
        "splits": int(table["splits"].sum()),
        "missed": int(table["missed"].sum()),
        "n_true": int(table["n_true"].sum()),
        "n_pred": int(table["n_pred"].sum()),
        **({} if math.isfinite(rho) else {"note": "constant counts"}),
    }


def overlay_examples(
    root: str | os.PathLike, scores: pd.DataFrame, n: int, min_true: int = 5
) -> tuple[list[np.ndarray], list[str]]:
    """Up to ``n`` scored patches (with at least ``min_true`` true nuclei, spread over the range of true
    counts) drawn with predicted and true outlines, and one title each naming found / true and F1."""
    from mtlutils.concepts.segment import segment_nuclei
    from mtlutils.plotting import segmentation_overlay

    candidates = scores[scores["n_true"] >= min_true].sort_values("n_true")
    chosen = candidates.iloc[:: max(1, len(candidates) // max(1, n))].head(n)
    pictures, titles = [], []
    for row in chosen.itertuples():
        image, inst = load_real_patch(root, row.name)
        pictures.append(segmentation_overlay(image, segment_nuclei(image, REAL_NUCLEI_MPP), truth=inst))
        titles.append(f"{row.name}: {row.n_pred} found / {row.n_true} true, F1 {row.f1:.2f}")
    return pictures, titles
