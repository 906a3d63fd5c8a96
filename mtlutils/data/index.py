"""The one reader of a patch dataset's ``index.csv`` (written by ``data.tile_cohort``) and its resolution."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

INDEX_FILE = "index.csv"
#: Column types of ``index.csv``; every reader uses these, so ids like "007" stay strings.
INDEX_DTYPES = {"slide_id": str, "patient_id": str, "center": str, "split": str, "file": str}
TILE_FIX = "create it with `mtlutils tile` (data.tile_cohort)"


def read_patch_index(
    patch_dir: str | os.PathLike, required: tuple[str, ...] = ("file", "row")
) -> pd.DataFrame:
    """``patch_dir/index.csv`` as a DataFrame, one row per patch, with :data:`INDEX_DTYPES`.

    A missing folder or file, missing ``required`` columns or an empty index raise a one-line error
    naming the path and the fix.
    """
    folder = Path(patch_dir).expanduser()
    path = folder / INDEX_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"patch folder {folder} does not exist; {TILE_FIX}")
    if not path.is_file():
        raise FileNotFoundError(f"patch folder {folder} has no {INDEX_FILE}; {TILE_FIX}")
    index = pd.read_csv(path, dtype=INDEX_DTYPES)
    missing = [c for c in required if c not in index.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {missing}; it was not written by data.tile_cohort: tile again"
        )
    if len(index) == 0:
        raise ValueError(
            f"patch folder {folder} holds no patches (empty {INDEX_FILE}); tile with a lower tissue_threshold"
        )
    return index


def patch_dir_mpp(patch_dir: str | os.PathLike) -> float:
    """The µm/px of the patches of a folder written by ``data.tile_cohort`` (its slide files' ``tile_mpp``)."""
    from mtlutils.core import hdf5

    folder = Path(patch_dir).expanduser()
    index = read_patch_index(folder)
    values = set()
    for file in dict.fromkeys(index["file"].astype(str)):
        if not (folder / file).is_file():
            raise FileNotFoundError(
                f"patch file {folder / file} listed in {INDEX_FILE} is missing; tile again"
            )
        value = hdf5.read_h5_attrs(folder / file).get("tile_mpp")
        if value is None:
            raise ValueError(f"{folder / file} has no tile_mpp attribute; re-tile it with data.tile_cohort")
        values.add(float(value))
    if len(values) != 1:
        raise ValueError(
            f"the slide files of {folder} were tiled at different µm/px {sorted(values)}; tile again"
        )
    return values.pop()
