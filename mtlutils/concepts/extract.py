"""Batch concept extraction: arrays of patches, and patch dataset folders with a per-slide cache and CLI."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtlutils.concepts.params import DEFAULT_PARAMS, SegmentationParams, check_image, check_mpp
from mtlutils.concepts.patch import CONCEPT_COLUMNS, patch_concepts
from mtlutils.concepts.scaler import ConceptScaler
from mtlutils.core.parallel import check_workers, parallel_map
from mtlutils.core.provenance import code_version

if TYPE_CHECKING:  # pandas is imported lazily: worker processes do not need it
    import pandas as pd

CONCEPTS_VERSION = 3  #: bump when the algorithm changes, so that caches are recomputed
CACHE_DIR = "concepts_cache"
CONCEPTS_FILE = "concepts.csv"
SCALER_FILE = "concept_scaler.json"
DESC = "nuclei concepts"  #: progress-bar label
#: Root of the code that computes a slide's concepts: its :func:`code_version` with every mtlutils module
#: it imports (segmentation, deconvolution, features …) is part of the cache key.
CONCEPTS_CODE = ("mtlutils.concepts.extract",)


def _rows_to_arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """List of concept dicts → one array per column (floats, ints and booleans kept apart)."""
    out: dict[str, np.ndarray] = {}
    for name in CONCEPT_COLUMNS:
        values = [r[name] for r in rows]
        if name in ("no_tissue", "no_nuclei"):
            out[name] = np.asarray(values, dtype=bool)
        elif name == "n_nuclei":
            out[name] = np.asarray(values, dtype=np.int64)
        else:
            out[name] = np.asarray(values, dtype=np.float64)
    return out


def _concepts_of_images(
    images: Sequence[np.ndarray], mpps: Sequence[float], params: SegmentationParams
) -> dict[str, np.ndarray]:
    """Concept columns of a chunk of checked images (one worker task)."""
    return _rows_to_arrays([patch_concepts(img, mpp, params) for img, mpp in zip(images, mpps, strict=True)])


def _concepts_of_h5_rows(
    path: str, start: int, stop: int, mpp: float, params: SegmentationParams
) -> dict[str, np.ndarray]:
    """Concept columns of rows start..stop of a slide file's ``images`` (one worker task)."""
    from mtlutils.core import hdf5

    arrays, _ = hdf5.read_h5(path, keys=["images"], rows=np.arange(start, stop))
    images = arrays["images"]
    return _concepts_of_images(list(images), [mpp] * len(images), params)


def extract_concepts(
    images: np.ndarray | Sequence[np.ndarray],
    mpp: float | Sequence[float],
    workers: int = 1,
    params: SegmentationParams = DEFAULT_PARAMS,
    chunk_size: int = 32,
) -> pd.DataFrame:
    """Concepts of many patches: a DataFrame with one row per image (columns :data:`CONCEPT_COLUMNS`).

    ``images``: an (N, H, W, 3) uint8 array or a sequence of (H, W, 3) uint8 arrays (sizes may
    differ). ``mpp``: µm/px of all images, or one value per image. ``workers`` > 1 runs chunks of
    ``chunk_size`` images in that many processes (one thread each); the result does not depend on it.
    """
    import pandas as pd

    workers = check_workers(workers)
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(
                f"images must be an (N, H, W, 3) uint8 array or a list of (H, W, 3) arrays, got shape {images.shape}"
            )
        if len(images):
            check_image(images[0], "images[0]")  # the stack shares shape and dtype: one check covers all
        image_list = list(images)
    else:
        image_list = [check_image(img, f"images[{i}]") for i, img in enumerate(images)]
    n = len(image_list)
    if n == 0:
        raise ValueError("extract_concepts got no images (an empty dataset); pass at least one patch")
    mpps = [float(mpp)] * n if np.ndim(mpp) == 0 else [float(m) for m in mpp]  # type: ignore[arg-type]
    if len(mpps) != n:
        raise ValueError(f"got {len(mpps)} mpp values for {n} images; pass one value or one per image")
    for m in set(mpps):
        check_mpp(m, params)
    chunk_size = max(1, int(chunk_size))
    tasks = [
        (image_list[i : i + chunk_size], mpps[i : i + chunk_size], params) for i in range(0, n, chunk_size)
    ]
    parts = list(parallel_map(_concepts_of_images, tasks, workers=workers, desc=DESC))
    return pd.DataFrame({name: np.concatenate([p[name] for p in parts]) for name in CONCEPT_COLUMNS})


def _cache_key(
    params: SegmentationParams, source: Path, tile_mpp: float, n_rows: int, code: str = ""
) -> dict[str, Any]:
    """What a slide's cached concepts depend on: reused only while every item is unchanged."""
    stat = source.stat()
    return {
        "version": CONCEPTS_VERSION,
        "code_version": code,
        "params": asdict(params),
        "tile_mpp": float(tile_mpp),
        "n_rows": int(n_rows),
        "source_size": int(stat.st_size),
        "source_mtime_ns": int(stat.st_mtime_ns),
    }


def _stale_slides(
    folder: Path, files: Sequence[str], cache_dir: Path, params: SegmentationParams, overwrite: bool
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, float]]:
    """(file, cache key) of the slides whose cache is missing or out of date, and every file's tile mpp."""
    from mtlutils.core import hdf5

    todo: list[tuple[str, dict[str, Any]]] = []
    tile_mpps: dict[str, float] = {}
    code = code_version(*CONCEPTS_CODE, follow_imports=True)
    for file in files:
        source = folder / file
        if not source.is_file():
            raise FileNotFoundError(
                f"patch file {source} listed in {folder / 'index.csv'} is missing; run tile_cohort again"
            )
        tile_mpp = hdf5.read_h5_attrs(source).get("tile_mpp")
        if tile_mpp is None:
            raise ValueError(f"{source} has no tile_mpp attribute; re-tile it with data.tile_cohort")
        tile_mpps[file] = float(tile_mpp)
        check_mpp(tile_mpp, params, what=f"{source.name} tile_mpp")
        key = _cache_key(params, source, float(tile_mpp), hdf5.h5_length(source, "images"), code)
        cached = cache_dir / Path(file).name
        if not overwrite and cached.is_file():
            try:
                if hdf5.read_h5_attrs(cached).get("cache_key") == key:
                    continue
            except OSError:
                pass  # unreadable cache: compute again
        todo.append((file, key))
    return todo, tile_mpps


def _fill_cache(
    folder: Path,
    cache_dir: Path,
    todo: Sequence[tuple[str, dict[str, Any]]],
    tile_mpps: Mapping[str, float],
    params: SegmentationParams,
    workers: int,
    chunk_size: int,
) -> None:
    """Compute the concepts of the ``todo`` slides in chunks; write each slide's cache once it is complete."""
    from mtlutils.core import hdf5

    tasks: list[tuple[Any, ...]] = []
    owner: list[str] = []
    for file, key in todo:
        for start in range(0, key["n_rows"], chunk_size):
            tasks.append(
                (str(folder / file), start, min(start + chunk_size, key["n_rows"]), tile_mpps[file], params)
            )
            owner.append(file)
    pending: dict[str, list[tuple[int, dict[str, np.ndarray]]]] = {file: [] for file, _ in todo}
    remaining = {file: owner.count(file) for file, _ in todo}
    keys = dict(todo)
    for file, key in todo:  # slides without patches still get an (empty) cache
        if key["n_rows"] == 0:
            hdf5.write_h5(cache_dir / Path(file).name, _rows_to_arrays([]), attrs={"cache_key": key})
    if not tasks:
        return
    for i, result in enumerate(parallel_map(_concepts_of_h5_rows, tasks, workers=workers, desc=DESC)):
        file = owner[i]
        pending[file].append((tasks[i][1], result))
        remaining[file] -= 1
        if remaining[file] == 0:  # slide complete: write its cache at once (resumable)
            parts = [r for _, r in sorted(pending.pop(file), key=lambda item: item[0])]
            arrays = {name: np.concatenate([p[name] for p in parts]) for name in CONCEPT_COLUMNS}
            hdf5.write_h5(cache_dir / Path(file).name, arrays, attrs={"cache_key": keys[file]})


def _table_from_cache(folder: Path, cache_dir: Path, index: pd.DataFrame) -> pd.DataFrame:
    """One row of concepts per row of ``index`` (same order), led by its key columns."""
    import pandas as pd

    from mtlutils.core import hdf5

    columns: dict[str, list[np.ndarray]] = {name: [] for name in CONCEPT_COLUMNS}
    order: list[np.ndarray] = []
    for file, group in index.groupby("file", sort=False):
        arrays, _ = hdf5.read_h5(cache_dir / Path(str(file)).name, keys=list(CONCEPT_COLUMNS))
        rows = group["row"].to_numpy(dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(arrays["n_nuclei"])):
            raise ValueError(
                f"index.csv refers to rows beyond {file}; run tile_cohort again to rebuild the index"
            )
        for name in CONCEPT_COLUMNS:
            columns[name].append(arrays[name][rows])
        order.append(group.index.to_numpy())
    table = pd.DataFrame({name: np.concatenate(columns[name]) for name in CONCEPT_COLUMNS})
    table.index = np.concatenate(order)
    table = table.sort_index()
    keys_df = index[[c for c in ("slide_id", "center", "split", "file", "row") if c in index.columns]]
    return pd.concat([keys_df.reset_index(drop=True), table.reset_index(drop=True)], axis=1)


def _fit_scaler(folder: Path, table: pd.DataFrame, fit_split: str) -> None:
    """Fit a :class:`ConceptScaler` on the ``fit_split`` rows of ``table`` and save it in ``folder``."""
    if "split" not in table.columns or not (table["split"] == fit_split).any():
        available = sorted(table["split"].dropna().unique().tolist()) if "split" in table.columns else []
        raise ValueError(
            f"{folder / 'index.csv'} has no patch with split {fit_split!r} to fit the concept scaler on "
            f"(splits: {available}); pass fit_split= one of them"
        )
    scaler = ConceptScaler().fit(
        table[table["split"] == fit_split], fitted_on=f"split == {fit_split!r}", skip_unfit=True
    )
    if scaler.skipped:
        warnings.warn(
            f"{folder / SCALER_FILE}: concept(s) {sorted(scaler.skipped)} left out of the scaler "
            f"({'; '.join(f'{k}: {v}' for k, v in scaler.skipped.items())})",
            stacklevel=3,
        )
    scaler.save(folder / SCALER_FILE)


def extract_patch_dir_concepts(
    patch_dir: str | os.PathLike,
    workers: int = 1,
    params: SegmentationParams = DEFAULT_PARAMS,
    fit_split: str = "train",
    chunk_size: int = 64,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Concepts of every patch of a dataset folder written by ``data.tile_cohort``; cached, resumable.

    Per slide file ``F.h5`` the concepts go to ``patch_dir/concepts_cache/F.h5`` (atomically; reused
    while the slide file, the tile mpp, ``params`` and the code version of :data:`CONCEPTS_CODE` are
    unchanged, so an interrupted run resumes).
    Then writes ``concepts.csv`` (one row per row of ``index.csv``, same order, with ``slide_id``,
    ``split``, ``file``, ``row`` for joining) and ``concept_scaler.json`` (a :class:`ConceptScaler`
    fitted on the rows whose split is ``fit_split`` only). Returns the concepts table.
    """
    from mtlutils.core import io as mio
    from mtlutils.data.index import read_patch_index

    workers = check_workers(workers)
    folder = Path(patch_dir).expanduser()
    index = read_patch_index(folder)
    cache_dir = mio.ensure_writable_dir(folder / CACHE_DIR)
    files = list(dict.fromkeys(index["file"].astype(str)))
    todo, tile_mpps = _stale_slides(folder, files, cache_dir, params, overwrite)
    _fill_cache(folder, cache_dir, todo, tile_mpps, params, workers, chunk_size)
    table = _table_from_cache(folder, cache_dir, index)
    with mio.atomic_path(folder / CONCEPTS_FILE) as tmp:
        table.to_csv(tmp, index=False)
    _fit_scaler(folder, table, fit_split)
    return table


def read_concepts(patch_dir: str | os.PathLike, standardise: bool = False) -> pd.DataFrame:
    """The concepts table of a patch folder (written by :func:`extract_patch_dir_concepts`).

    Rows align with ``index.csv``. ``standardise=True`` replaces each concept the stored
    :class:`ConceptScaler` knows by its z-score (fitted on the training split; NaN stays NaN).
    """
    import pandas as pd

    from mtlutils.data.index import INDEX_DTYPES

    folder = Path(patch_dir).expanduser()
    path = folder / CONCEPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `mtlutils concepts --patches {folder}` first")
    table = pd.read_csv(path, dtype=INDEX_DTYPES)
    if standardise:
        scaler = ConceptScaler.load(folder / SCALER_FILE)
        table[scaler.names] = scaler.transform(table)
    return table


def extract_concepts_cli(patches: str, workers: int) -> int:
    """``mtlutils concepts --patches DIR [--workers N]``: write concepts.csv + concept_scaler.json; exit code."""
    import sys

    try:
        table = extract_patch_dir_concepts(patches, workers=workers)
    except (ValueError, FileNotFoundError, OSError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    folder = Path(patches).expanduser()
    print(
        f"wrote {len(table)} rows to {folder / CONCEPTS_FILE} ({int(table['no_tissue'].sum())} without tissue, "
        f"{int(table['no_nuclei'].sum())} without nuclei) and {folder / SCALER_FILE}"
    )
    return 0
