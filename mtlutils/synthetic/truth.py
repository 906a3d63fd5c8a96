"""Ground truth of tiled patches: the generator's true nuclei and nuclei concepts per patch."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtlutils.data.index import INDEX_FILE, read_patch_index
from mtlutils.synthetic.model import NUCLEUS_TYPES

GROUND_TRUTH_COLUMNS = ("n_nuclei", "count", "area", "area_cv", "intensity") + tuple(
    f"n_{kind}" for kind in NUCLEUS_TYPES
)


def patch_ground_truth(
    nuclei: pd.DataFrame,
    coords: pd.DataFrame | np.ndarray,
    tile_size_px: float,
    mpp: float,
    tissue_fraction: float | Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """The generator's true nuclei concepts of square patches of one slide, one row per patch.

    ``nuclei``: the slide's ground truth (``nuclei/{slide_id}.csv``: level-0 px centroids ``x_px``,
    ``y_px``, ``area_um2``, ``type``, ``intensity``). ``coords``: top-left corners in level-0 px
    (a frame with ``x_px``, ``y_px`` or an (N, 2) array of x, y). ``tile_size_px``: the patch side in
    level-0 px; ``mpp``: µm per level-0 px. A nucleus belongs to a patch when its centroid lies in
    [x, x + size) × [y, y + size).

    Columns: ``n_nuclei`` and ``n_<type>`` (nuclei per patch), ``count`` (nuclei per mm² of tissue),
    ``area`` (mean area, µm²), ``area_cv`` (SD / mean of the areas, ≥ 2 nuclei), ``intensity`` (mean
    relative hematoxylin load, stain-free). The tissue area is ``tissue_fraction`` × patch area:
    pass one fraction per patch (e.g. the ``tissue_fraction`` that :func:`mtlutils.concepts.patch_concepts`
    measured, which is the denominator of the measured ``count``, so the two counts differ only in
    the nuclei); ``None`` divides by the whole patch area. Undefined values are NaN.
    """
    missing = [c for c in ("x_px", "y_px", "area_um2", "type", "intensity") if c not in nuclei.columns]
    if missing:
        raise ValueError(
            f"nuclei table lacks column(s) {missing}; pass a nuclei/<slide_id>.csv written by generate_cohort"
        )
    if isinstance(coords, pd.DataFrame):
        if not {"x_px", "y_px"} <= set(coords.columns):
            raise ValueError("coords must have columns x_px, y_px (level-0 top-left corners of the patches)")
        corners = coords[["x_px", "y_px"]].to_numpy(dtype=np.float64)
    else:
        corners = np.asarray(coords, dtype=np.float64)
        if corners.ndim != 2 or corners.shape[1] != 2:
            raise ValueError(f"coords must be an (N, 2) array of x, y level-0 px, got shape {corners.shape}")
    size = float(tile_size_px)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"tile_size_px={tile_size_px!r} must be a positive number of level-0 px")
    mpp = float(mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp={mpp!r} must be a positive number of µm per level-0 px")
    n_patches = len(corners)
    if tissue_fraction is None:
        fraction = np.ones(n_patches)
    else:
        fraction = np.broadcast_to(np.asarray(tissue_fraction, dtype=np.float64), (n_patches,)).copy()
        if np.any(fraction[np.isfinite(fraction)] < 0) or np.any(fraction > 1):
            raise ValueError(
                "tissue_fraction must lie in [0, 1] (a fraction of the patch area, not a percent)"
            )

    x = nuclei["x_px"].to_numpy(np.float64)
    y = nuclei["y_px"].to_numpy(np.float64)
    area = nuclei["area_um2"].to_numpy(np.float64)
    intensity = nuclei["intensity"].to_numpy(np.float64)
    kind = nuclei["type"].astype(str).to_numpy()
    n = np.zeros(n_patches, np.int64)
    sums = {name: np.zeros(n_patches) for name in ("area", "area2", "intensity")}
    by_type = {t: np.zeros(n_patches, np.int64) for t in NUCLEUS_TYPES}
    chunk = max(1, 4_000_000 // max(len(x), 1))  # bounded memory for the patch × nucleus membership
    for start in range(0, n_patches, chunk):
        cx, cy = corners[start : start + chunk, :1], corners[start : start + chunk, 1:]
        inside = (x >= cx) & (x < cx + size) & (y >= cy) & (y < cy + size)
        sl = slice(start, start + len(cx))
        n[sl] = inside.sum(axis=1)
        sums["area"][sl] = inside @ area
        sums["area2"][sl] = inside @ (area * area)
        sums["intensity"][sl] = inside @ intensity
        for t in NUCLEUS_TYPES:
            by_type[t][sl] = inside[:, kind == t].sum(axis=1)

    tissue_mm2 = fraction * (size * mpp) ** 2 * 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.where(tissue_mm2 > 0, n / tissue_mm2, np.nan)
        mean_area = np.where(n > 0, sums["area"] / np.maximum(n, 1), np.nan)
        var = (sums["area2"] - n * mean_area**2) / np.maximum(n - 1, 1)
        area_cv = np.where(n >= 2, np.sqrt(np.maximum(var, 0)) / mean_area, np.nan)
        mean_intensity = np.where(n > 0, sums["intensity"] / np.maximum(n, 1), np.nan)
    out = pd.DataFrame(
        {
            "n_nuclei": n,
            "count": count,
            "area": mean_area,
            "area_cv": area_cv,
            "intensity": mean_intensity,
            **{f"n_{t}": by_type[t] for t in NUCLEUS_TYPES},
        }
    )
    if isinstance(coords, pd.DataFrame):
        out.index = coords.index
    return out[list(GROUND_TRUTH_COLUMNS)]


def patch_dir_ground_truth(
    patch_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    tissue_fraction: Sequence[float] | np.ndarray | pd.Series | None = None,
    rows: Sequence[bool] | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """:func:`patch_ground_truth` for every patch of a folder tiled from a synthetic cohort.

    Reads ``patch_dir/index.csv`` (level-0 corners, slide ``mpp``), each slide file's ``tile_size_px``
    attribute and ``cohort_dir/nuclei/{slide_id}.csv``. Returns one row per ``index.csv`` row (same
    order, with ``slide_id``, ``center``, ``split``) or, given the boolean mask ``rows``, per selected
    row. ``tissue_fraction``: one value per index row (e.g. ``concepts.csv``'s ``tissue_fraction``),
    or None for the whole patch area.
    """
    from mtlutils.core import hdf5

    folder, cohort = Path(patch_dir).expanduser(), Path(cohort_dir).expanduser()
    index_path = _index_path(folder)
    index = read_patch_index(folder, required=("slide_id", "center", "split", "file", "x_px", "y_px", "mpp"))
    fractions = None if tissue_fraction is None else np.asarray(tissue_fraction, dtype=np.float64)
    if fractions is not None and len(fractions) != len(index):
        raise ValueError(
            f"tissue_fraction has {len(fractions)} values for {len(index)} patches in {index_path}; "
            "pass concepts.csv's column for the same folder"
        )
    keep = np.ones(len(index), bool) if rows is None else np.asarray(rows, dtype=bool)
    if keep.shape != (len(index),):
        raise ValueError(
            f"rows must be a boolean mask of {len(index)} values (one per patch of {index_path})"
        )
    parts = []
    for (slide_id, file), group in index[keep].groupby(["slide_id", "file"], sort=False):
        attrs = hdf5.read_h5_attrs(folder / str(file))
        if "tile_size_px" not in attrs:
            raise ValueError(f"{folder / str(file)} has no tile_size_px attribute; tile the cohort again")
        truth = patch_ground_truth(
            read_nuclei(cohort, str(slide_id)),
            group,
            float(attrs["tile_size_px"]),
            float(group["mpp"].iloc[0]),
            None if fractions is None else fractions[group.index.to_numpy()],
        )
        parts.append(pd.concat([group[["slide_id", "center", "split"]], truth], axis=1))
    if not parts:
        raise ValueError(f"no patch selected from {index_path}; check the rows mask")
    return pd.concat(parts).sort_index()


def _index_path(folder: Path) -> Path:
    """``folder/index.csv``, or a FileNotFoundError naming it (before :func:`read_patch_index` reads it)."""
    path = folder / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; tile the cohort first (notebook 01 or `mtlutils tile`)"
        )
    return path


def read_nuclei(cohort_dir: str | os.PathLike, slide_id: str) -> pd.DataFrame:
    """The ground-truth nuclei table of one slide of a cohort written by :func:`generate_cohort`."""
    path = Path(cohort_dir).expanduser() / "nuclei" / f"{slide_id}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no ground truth {path}: is {cohort_dir} the synthetic cohort (generate_cohort) slide {slide_id!r} came from?"
        )
    return pd.read_csv(path)


def nuclei_in_patch(
    nuclei: pd.DataFrame, x_px: float, y_px: float, tile_size_px: float, tile_px: int | None = None
) -> pd.DataFrame:
    """The nuclei whose centroid lies in the patch with level-0 top-left (x_px, y_px) and side
    ``tile_size_px``, with added ``patch_x``, ``patch_y``: the centroid in pixels of the patch image
    (``tile_px`` px wide; default ``tile_size_px``, i.e. a patch read at level 0 without resizing)."""
    size = float(tile_size_px)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"tile_size_px={tile_size_px!r} must be a positive number of level-0 px")
    scale = 1.0 if tile_px is None else float(tile_px) / size
    x, y = nuclei["x_px"].to_numpy(np.float64), nuclei["y_px"].to_numpy(np.float64)
    inside = (x >= x_px) & (x < x_px + size) & (y >= y_px) & (y < y_px + size)
    out = nuclei.loc[inside].copy()
    out["patch_x"] = (out["x_px"] - x_px) * scale
    out["patch_y"] = (out["y_px"] - y_px) * scale
    return out


def patch_dir_true_nuclei(
    patch_dir: str | os.PathLike, cohort_dir: str | os.PathLike, rows: Iterable[int]
) -> list[pd.DataFrame]:
    """:func:`nuclei_in_patch` for the patches at positions ``rows`` of ``patch_dir/index.csv`` (in
    that order): the true nuclei of each patch, centroids in patch-image pixels (for overlays)."""
    from mtlutils.core import hdf5

    folder = Path(patch_dir).expanduser()
    index_path = _index_path(folder)
    index = read_patch_index(folder, required=("slide_id", "file", "x_px", "y_px"))
    tables: dict[str, pd.DataFrame] = {}
    out = []
    for position in rows:
        if not 0 <= int(position) < len(index):
            raise ValueError(f"row {position} is outside {index_path} ({len(index)} patches)")
        row = index.iloc[int(position)]
        if row["slide_id"] not in tables:
            tables[row["slide_id"]] = read_nuclei(cohort_dir, row["slide_id"])
        attrs = hdf5.read_h5_attrs(folder / row["file"])
        out.append(
            nuclei_in_patch(
                tables[row["slide_id"]],
                row["x_px"],
                row["y_px"],
                attrs["tile_size_px"],
                int(attrs["tile_px"]),
            )
        )
    return out


#: nucleus types that belong to a benign mimic (lymphoid follicle, sinus histiocytes, crush artefact)
MIMIC_TYPES = ("germinal", "mantle", "histiocyte", "crushed")
MIMIC_MIN_NUCLEI = 3  # a patch "contains a mimic" from this many mimic nuclei on
TRUE_LABEL_COLUMNS = ("true_tumour_fraction", "true_label", "n_mimic", "has_mimic")


def true_regions(cohort_dir: str | os.PathLike, slide_id: str) -> list[np.ndarray]:
    """The exact tumour polygons of one slide: ``truth/{slide_id}.xml`` when the cohort has one (its
    annotation XML is then drawn coarsely), else ``annotations/{slide_id}.xml`` (exact in cohorts
    written before coarse annotations)."""
    from mtlutils.data.annotations import read_asap_xml

    cohort = Path(cohort_dir).expanduser()
    exact = cohort / "truth" / f"{slide_id}.xml"
    path = exact if exact.is_file() else cohort / "annotations" / f"{slide_id}.xml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no tumour regions {path}: is {cohort_dir} the cohort of slide {slide_id!r}?"
        )
    return read_asap_xml(path)


def _box_fractions(
    polygons: Sequence[np.ndarray], corners: np.ndarray, size: float, grid: int = 32
) -> np.ndarray:
    """Fraction (0–1) of each square box (top-left ``corners`` x, y, side ``size`` px) inside the
    polygons, sampled at ``grid`` × ``grid`` points per box."""
    from matplotlib.path import Path as MplPath

    out = np.zeros(len(corners))
    if not polygons or len(corners) == 0:
        return out
    offsets = (np.arange(grid) + 0.5) * size / grid
    gx, gy = np.meshgrid(offsets, offsets)
    pts = (corners[:, None, :] + np.column_stack([gx.ravel(), gy.ravel()])[None]).reshape(-1, 2)
    inside = np.zeros(len(pts), bool)
    for poly in polygons:
        inside |= MplPath(np.asarray(poly, float)).contains_points(pts)
    return inside.reshape(len(corners), -1).mean(axis=1)


def patch_dir_true_labels(patch_dir: str | os.PathLike, cohort_dir: str | os.PathLike) -> pd.DataFrame:
    """True tumour label and benign-mimic flag of every patch of ``patch_dir/index.csv`` (same order).

    Columns: ``true_tumour_fraction`` (share of the patch inside the exact tumour regions, 0–1),
    ``true_label`` (1 when that share is >= 0.5, else 0: evaluate against this, not against the
    index's ``label``, which comes from the annotation XML), ``n_mimic`` (nuclei of the
    :data:`MIMIC_TYPES`) and ``has_mimic`` (``n_mimic >= MIMIC_MIN_NUCLEI``).
    """
    from mtlutils.core import hdf5

    folder = Path(patch_dir).expanduser()
    _index_path(folder)
    index = read_patch_index(folder, required=("slide_id", "file", "x_px", "y_px"))
    out = pd.DataFrame(index=index.index, columns=list(TRUE_LABEL_COLUMNS), dtype=float)
    for (slide_id, file), group in index.groupby(["slide_id", "file"], sort=False):
        size = float(hdf5.read_h5_attrs(folder / str(file))["tile_size_px"])
        corners = group[["x_px", "y_px"]].to_numpy(np.float64)
        fraction = _box_fractions(true_regions(cohort_dir, str(slide_id)), corners, size)
        nuclei = read_nuclei(cohort_dir, str(slide_id))
        mimic = nuclei[nuclei["type"].isin(MIMIC_TYPES)]
        x, y = mimic["x_px"].to_numpy(np.float64), mimic["y_px"].to_numpy(np.float64)
        cx, cy = corners[:, :1], corners[:, 1:]
        n_mimic = ((x >= cx) & (x < cx + size) & (y >= cy) & (y < cy + size)).sum(axis=1)
        out.loc[group.index, "true_tumour_fraction"] = fraction
        out.loc[group.index, "true_label"] = (fraction >= 0.5).astype(float)
        out.loc[group.index, "n_mimic"] = n_mimic
    out["n_mimic"] = out["n_mimic"].astype(int)
    out["true_label"] = out["true_label"].astype(int)
    out["has_mimic"] = out["n_mimic"] >= MIMIC_MIN_NUCLEI
    return out
