"""Loading a patch dataset written by ``tile_cohort`` into memory: :class:`PatchSet`, :func:`load_patches`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtlutils.core import hdf5
from mtlutils.data.index import INDEX_FILE, read_patch_index

__all__ = ["PatchSet", "load_patches"]


@dataclass
class PatchSet:
    """Patches in memory: ``images`` uint8 (N, H, W, 3) and ``meta`` (N rows, aligned with images;
    columns of ``index.csv``)."""

    images: np.ndarray
    meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self.meta)


def _selection(values: str | Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else [str(v) for v in values]


def load_patches(
    patch_dir: str | os.PathLike,
    split: str | Sequence[str] | None = None,
    center: str | Sequence[str] | None = None,
) -> PatchSet:
    """Load the patches written by :func:`~mtlutils.data.cohort.tile_cohort`, optionally only some splits / centers.

    ``split``/``center``: a value or a list of values. An empty dataset or selection raises a one-line
    ``ValueError`` naming the folder and the available values.
    """
    folder = Path(patch_dir).expanduser()
    index_path = folder / INDEX_FILE
    meta = read_patch_index(folder)
    selected = np.ones(len(meta), dtype=bool)
    for col, wanted in (("split", _selection(split)), ("center", _selection(center))):
        if wanted is not None:
            selected &= meta[col].isin(wanted).to_numpy()
            if not selected.any():
                available = sorted(meta[col].unique().tolist())
                raise ValueError(
                    f"patch folder {folder}: no patch with {col} in {wanted}; available: {available}"
                )
    meta = meta.loc[selected].reset_index(drop=True)
    first = hdf5.read_h5_attrs(folder / meta["file"].iloc[0])
    tile_px = int(first["tile_px"])
    images = np.empty((len(meta), tile_px, tile_px, 3), dtype=np.uint8)
    for file, group in meta.groupby("file", sort=False):
        path = folder / str(file)
        if not path.is_file():
            raise FileNotFoundError(
                f"patch file {path} listed in {index_path} is missing; run tile_cohort again to rebuild it"
            )
        arrays, _ = hdf5.read_h5(path, keys=["images"], rows=group["row"].to_numpy())
        images[group.index.to_numpy()] = arrays["images"]
    return PatchSet(images=images, meta=meta)
