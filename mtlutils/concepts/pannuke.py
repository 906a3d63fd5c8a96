"""PanNuke adapter: ground-truth nuclei concepts from a PanNuke fold, to check our segmentation.

PanNuke (Gamper et al. 2019/2020; CC BY-NC-SA 4.0, not shipped here) comes as three folds of
256 × 256 px patches at 40x (≈ 0.25 µm/px), each fold a folder holding

* ``images.npy`` — (N, 256, 256, 3) RGB, float64 with values 0–255 (or uint8);
* ``masks.npy`` — (N, 256, 256, 6): channels 0–4 are instance maps (0 = none, k > 0 = nucleus id)
  of neoplastic, inflammatory, connective/soft tissue, dead and epithelial nuclei; channel 5 marks
  the background (1 where no nucleus);
* ``types.npy`` — (N,) tissue names (``"Breast"``, ``"Colon"``, ...).

The files may sit directly in the folder or in PanNuke's own nesting (``images/fold1/images.npy``,
``masks/fold1/masks.npy``); :func:`find_fold_files` finds them. Arrays are memory-mapped, so a whole
fold (≈ 8 GB of float64 masks) is never read into memory at once.

A nucleus is one (channel, id) pair: ids are not assumed unique across channels. Ground-truth
``count`` is nuclei per mm² of *tissue*, with the tissue mask of :func:`mtlutils.concepts.tissue_mask`
on the image — the same denominator as our ``count`` concept — and ``area`` is the mean area (µm²)
of the annotated nuclei at :data:`PANNUKE_MPP`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtlutils.concepts.deconvolution import tissue_mask
from mtlutils.concepts.params import DEFAULT_PARAMS, SegmentationParams
from mtlutils.core.progress import progress

__all__ = [
    "NUCLEUS_CLASSES",
    "PANNUKE_MPP",
    "PanNukeFold",
    "find_fold_files",
    "load_fold",
    "instance_map",
    "image_uint8",
    "ground_truth_concepts",
]

PANNUKE_MPP = 0.25  #: µm per pixel of PanNuke patches (40x)
NUCLEUS_CLASSES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
_FILES = ("images.npy", "masks.npy", "types.npy")


@dataclass
class PanNukeFold:
    """A PanNuke fold: ``images`` (N, H, W, 3), ``masks`` (N, H, W, 6) (memory-mapped) and ``types`` (N,)."""

    images: np.ndarray
    masks: np.ndarray
    types: np.ndarray
    folder: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])


def find_fold_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Paths of ``images.npy``, ``masks.npy`` and ``types.npy`` in ``folder`` or below it (one each)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"PanNuke fold folder {root} does not exist; pass the folder of one fold")
    found: dict[str, Path] = {}
    for name in _FILES:
        direct = root / name
        matches = [direct] if direct.is_file() else sorted(p for p in root.rglob(name) if p.is_file())
        if not matches:
            raise FileNotFoundError(
                f"PanNuke fold {root} has no {name}; expected images.npy, masks.npy and types.npy in it "
                "(or in PanNuke's images/foldN and masks/foldN sub-folders)"
            )
        if len(matches) > 1:
            raise ValueError(
                f"PanNuke folder {root} holds several {name} ({', '.join(str(m) for m in matches[:3])}); "
                "pass the folder of a single fold"
            )
        found[name.removesuffix(".npy")] = matches[0]
    return found


def load_fold(folder: str | os.PathLike) -> PanNukeFold:
    """Open a PanNuke fold (memory-mapped) and check that its three arrays agree."""
    paths = find_fold_files(folder)
    images = np.load(paths["images"], mmap_mode="r")
    masks = np.load(paths["masks"], mmap_mode="r")
    try:
        types = np.load(paths["types"], allow_pickle=False)
    except ValueError:
        raise ValueError(
            f"{paths['types']} stores Python objects; re-save it as strings: "
            "np.save(path, np.asarray(types, dtype=str))"
        ) from None
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{paths['images']} has shape {images.shape}; PanNuke images are (N, H, W, 3)")
    if masks.ndim != 4 or masks.shape[3] != 6 or masks.shape[:3] != images.shape[:3]:
        raise ValueError(
            f"{paths['masks']} has shape {masks.shape}; expected (N, H, W, 6) matching images {images.shape}"
        )
    if types.shape != (images.shape[0],):
        raise ValueError(
            f"{paths['types']} has shape {types.shape}; expected ({images.shape[0]},) tissue names"
        )
    if images.shape[0] == 0:
        raise ValueError(f"PanNuke fold {Path(folder)} holds no patches")
    return PanNukeFold(images=images, masks=masks, types=types.astype(str), folder=Path(folder))


def image_uint8(image: np.ndarray) -> np.ndarray:
    """A PanNuke image (float 0–255 or uint8) as an (H, W, 3) uint8 array."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"PanNuke image has dtype {image.dtype}; expected float (0-255) or uint8")
    if image.size and float(np.nanmax(image)) <= 1.0:
        raise ValueError(
            "PanNuke image values are all <= 1: this looks like a [0, 1] image; multiply by 255 first"
        )
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def instance_map(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One patch's (H, W, 6) PanNuke mask → (instance labels (H, W) int32, class index per nucleus).

    Nuclei are numbered 1..n over the five nucleus channels in order (a pixel claimed by two channels
    goes to the later one, which never happens in the published masks). ``classes[k - 1]`` is the
    index into :data:`NUCLEUS_CLASSES` of nucleus k.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3 or mask.shape[2] != 6:
        raise ValueError(f"a PanNuke mask has shape (H, W, 6), got {mask.shape}")
    labels = np.zeros(mask.shape[:2], dtype=np.int32)
    classes: list[np.ndarray] = []
    offset = 0
    for channel in range(len(NUCLEUS_CLASSES)):
        ids = np.rint(np.asarray(mask[..., channel], dtype=np.float64)).astype(np.int64)
        present = np.unique(ids[ids > 0])
        if present.size == 0:
            continue
        lut = np.zeros(int(present.max()) + 1, dtype=np.int32)
        lut[present] = np.arange(offset + 1, offset + 1 + present.size, dtype=np.int32)
        labels = np.where(ids > 0, lut[ids], labels)
        classes.append(np.full(present.size, channel, dtype=np.int64))
        offset += present.size
    return labels, (np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64))


def ground_truth_concepts(
    fold: PanNukeFold | str | os.PathLike,
    mpp: float = PANNUKE_MPP,
    indices: np.ndarray | list[int] | None = None,
    params: SegmentationParams = DEFAULT_PARAMS,
) -> pd.DataFrame:
    """Concepts from PanNuke's annotated instance masks: one row per patch.

    Columns: ``index`` (patch in the fold), ``tissue`` (type), ``n_nuclei``, ``count`` (nuclei per mm²
    of tissue), ``area`` (mean nuclear area, µm²; NaN without nuclei), ``area_cv`` (NaN with < 2
    nuclei), ``tissue_fraction``, one ``n_<class>`` column per nucleus class. ``count`` is NaN when the
    patch has less than ``params.min_tissue_fraction`` tissue (as for our own concepts).
    """
    if not isinstance(fold, PanNukeFold):
        fold = load_fold(fold)
    chosen = np.arange(len(fold)) if indices is None else np.asarray(indices, dtype=np.int64)
    if chosen.size == 0:
        raise ValueError("ground_truth_concepts got no patch indices; pass at least one")
    if chosen.min() < 0 or chosen.max() >= len(fold):
        raise ValueError(f"patch indices must lie in [0, {len(fold)}); got {chosen.min()}..{chosen.max()}")
    rows = []
    for i in progress(chosen, desc="PanNuke ground truth", total=len(chosen)):
        labels, classes = instance_map(fold.masks[i])
        image = image_uint8(fold.images[i])
        tissue_fraction = float(tissue_mask(image, mpp, params).mean())
        n = int(labels.max())
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:] * (mpp * mpp)
        tissue_mm2 = tissue_fraction * labels.size * mpp * mpp * 1e-6
        row = {
            "index": int(i),
            "tissue": str(fold.types[i]),
            "n_nuclei": n,
            "count": n / tissue_mm2 if tissue_fraction >= params.min_tissue_fraction else math.nan,
            "area": float(areas.mean()) if n else math.nan,
            "area_cv": float(areas.std(ddof=1) / areas.mean()) if n >= 2 else math.nan,
            "tissue_fraction": tissue_fraction,
        }
        for k, name in enumerate(NUCLEUS_CLASSES):
            row[f"n_{name}"] = int((classes == k).sum())
        rows.append(row)
    return pd.DataFrame(rows)
