"""Cutting one slide into tiles: the tile grid, tissue and tumour fractions, labels, sampling, reading.

Labels: 1 = tumour (tumour fraction ≥ ``tumour_min``), 0 = normal (≤ ``normal_max``); tiles in between
are *ambiguous* and dropped. Without tumour polygons the labels are *unknown*: ``label`` and
``tumour_fraction`` are NaN (tiles kept). Coordinates are level-0 px (see :mod:`mtlutils.data.wsi`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.data.tissue import TissueMask, detect_tissue
from mtlutils.data.units import check_mpp
from mtlutils.data.wsi import NoTissueError, Slide, SlideError

__all__ = ["TilePlan", "plan_tiles", "iter_tile_blocks", "tile_slide"]

#: Per-tile columns of a tiled slide, in this order (also the HDF5 datasets beside the images).
COORD_COLUMNS = (
    "x_px",
    "y_px",
    "x_um",
    "y_um",
    "grid_row",
    "grid_col",
    "tissue_fraction",
    "tumour_fraction",
    "label",
    "sampling_weight",
)


@dataclass
class TilePlan:
    """Where the tiles of one slide are and how to read them (internal to tiling)."""

    coords: pd.DataFrame
    level: int
    read_px: int
    tile_px: int
    tile_size_px: float  # level-0 px covered by one tile
    actual_tile_mpp: float
    info: dict[str, Any]
    tissue: TissueMask | None = None


def _sample_balanced(labels: np.ndarray, max_tiles: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices (sorted) of ``max_tiles`` rows: each class (NaN its own class) first gets up to
    max_tiles // (2 · n_classes) rows, the rest is shared in proportion to class size. Returns the
    indices and a record of class counts before/after.
    """
    rng = np.random.default_rng(seed)
    keys = np.where(np.isnan(labels), -1.0, labels)
    classes, counts = np.unique(keys, return_counts=True)
    floor = max_tiles // (2 * len(classes))
    take = np.minimum(counts, floor)
    remaining = max_tiles - take.sum()
    spare = counts - take
    if remaining > 0 and spare.sum() > 0:
        share = remaining * spare / spare.sum()
        extra = np.minimum(np.floor(share).astype(int), spare)
        left = remaining - extra.sum()
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        for i in order:
            if left <= 0:
                break
            if extra[i] < spare[i]:
                extra[i] += 1
                left -= 1
        take = take + extra
    chosen = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(keys == cls)
        chosen.append(rng.choice(members, size=int(k), replace=False))
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)
    name = {-1.0: "unknown", 0.0: "normal", 1.0: "tumour"}
    record = {
        "max_tiles": int(max_tiles),
        "seed": int(seed),
        "before": {name.get(float(c), str(c)): int(n) for c, n in zip(classes, counts, strict=True)},
        "after": {name.get(float(c), str(c)): int(k) for c, k in zip(classes, take, strict=True)},
    }
    return idx, record


def _tumour_fractions(
    x_px: np.ndarray,
    y_px: np.ndarray,
    size: float,
    polygons: Sequence[np.ndarray],
    exclusions: Sequence[np.ndarray],
    grid: int = 32,
    max_raster_px: int = 64_000_000,
) -> np.ndarray:
    """Fraction (0–1) of each tile box inside the tumour polygons minus exclusions, sampled at
    ``grid`` x ``grid`` points per tile (tiles lie on a regular grid of pitch ``size`` level-0 px).

    The polygons are rasterised once over their bounding box at ``size / grid`` level-0 px per raster
    px and averaged per tile; when that raster would exceed ``max_raster_px`` pixels, each touched
    tile is rasterised on its own instead (same sample points, less memory, slower).
    """
    from mtlutils.data.annotations import rasterize_polygons

    out = np.zeros(len(x_px), dtype=np.float64)
    if not polygons or len(x_px) == 0:
        return out
    points = np.concatenate([np.asarray(p, dtype=float) for p in polygons])
    c0, r0 = (max(0, int(math.floor(v / size))) for v in points.min(axis=0))
    c1, r1 = (max(0, int(math.ceil(v / size))) for v in points.max(axis=0))
    cols = np.round(np.asarray(x_px) / size).astype(np.int64)
    rows = np.round(np.asarray(y_px) / size).astype(np.int64)
    inside = (cols >= c0) & (cols < c1) & (rows >= r0) & (rows < r1)
    if c1 <= c0 or r1 <= r0 or not inside.any():
        return out
    if (c1 - c0) * (r1 - r0) * grid * grid <= max_raster_px:
        offset = np.array([c0 * size, r0 * size])
        raster = rasterize_polygons(
            [p - offset for p in polygons],
            ((r1 - r0) * grid, (c1 - c0) * grid),
            downsample=size / grid,
            exclusions=[e - offset for e in exclusions],
        )
        per_tile = raster.reshape(r1 - r0, grid, c1 - c0, grid).mean(axis=(1, 3))
        out[inside] = per_tile[rows[inside] - r0, cols[inside] - c0]
        return out
    for i in np.flatnonzero(inside):
        offset = np.array([cols[i] * size, rows[i] * size])
        mask = rasterize_polygons(
            [p - offset for p in polygons],
            (grid, grid),
            downsample=size / grid,
            exclusions=[e - offset for e in exclusions],
        )
        out[i] = mask.mean()
    return out


def plan_tiles(
    slide: Slide,
    tile_mpp: float = 0.5,
    tile_px: int = 224,
    tissue_threshold: float = 0.5,
    tumour_polygons: Sequence[np.ndarray] | None = None,
    exclusion_polygons: Sequence[np.ndarray] = (),
    tumour_min: float = 0.5,
    normal_max: float = 0.05,
    max_tiles: int | None = None,
    seed: int = 0,
    tissue: TissueMask | None = None,
    mask_mpp: float = 8.0,
) -> TilePlan:
    """Choose the tiles of a slide (grid, tissue, labels, sampling) without reading any pixel of them.

    See :func:`tile_slide` for the parameters.
    """
    tile_mpp = check_mpp(tile_mpp, what="tile_mpp", fix="use e.g. 0.5 (a 20x scan) or 0.25 (40x)")
    if tile_px < 8:
        raise ValueError(f"tile_px={tile_px} must be >= 8")
    if not 0 <= tissue_threshold <= 1:
        raise ValueError(f"tissue_threshold={tissue_threshold} must be in [0, 1]")
    if not 0 <= normal_max < tumour_min <= 1:
        raise ValueError(f"need 0 <= normal_max ({normal_max}) < tumour_min ({tumour_min}) <= 1")
    if max_tiles is not None and max_tiles < 1:
        raise ValueError(f"max_tiles={max_tiles} must be >= 1, or None for all tiles")
    downsample = tile_mpp / slide.mpp
    level = slide.best_level_for_downsample(downsample)
    level_ds = slide.level_downsamples[level]
    level_w, level_h = slide.level_dimensions[level]
    read_px = max(1, round(tile_px * downsample / level_ds))  # tile edge at the read level
    tile_size = read_px * level_ds  # level-0 px per tile
    n_cols, n_rows = level_w // read_px, level_h // read_px
    if n_cols == 0 or n_rows == 0:
        raise SlideError(
            f"slide {slide.path} ({slide.dimensions[0]}x{slide.dimensions[1]} px at {slide.mpp:.3g} µm/px) is smaller than one "
            f"{tile_px}-px tile at {tile_mpp} µm/px; use a smaller tile_px or tile_mpp"
        )
    grid_r, grid_c = np.divmod(np.arange(n_rows * n_cols), n_cols)
    x_px = np.round(grid_c * read_px * level_ds).astype(np.int64)
    y_px = np.round(grid_r * read_px * level_ds).astype(np.int64)
    if tissue is None:
        tissue = detect_tissue(slide, mask_mpp=mask_mpp)
    fraction = tissue.fraction(x_px, y_px, tile_size)
    keep = fraction >= tissue_threshold - 1e-9
    fix = "lower tissue_threshold (e.g. 0.1) or check the slide (blank, out of focus, wrong file?)"
    if not tissue.mask.any() and tissue_threshold > 0:
        raise NoTissueError(f"no tissue detected in slide {slide.path}; {fix}")
    if not keep.any():
        raise NoTissueError(
            f"no tile of slide {slide.path} has tissue fraction >= {tissue_threshold} (max {fraction.max():.2f}); {fix}"
        )
    coords = pd.DataFrame(
        {
            "x_px": x_px[keep],
            "y_px": y_px[keep],
            "grid_row": grid_r[keep].astype(np.int32),
            "grid_col": grid_c[keep].astype(np.int32),
            "tissue_fraction": fraction[keep].astype(np.float32),
        }
    )
    coords["x_um"] = coords["x_px"] * slide.mpp
    coords["y_um"] = coords["y_px"] * slide.mpp
    n_tissue = len(coords)
    if tumour_polygons is None:
        coords["tumour_fraction"] = np.float32(np.nan)
        coords["label"] = np.float32(np.nan)
        n_ambiguous = 0
    else:
        tumour = _tumour_fractions(
            coords["x_px"].to_numpy(),
            coords["y_px"].to_numpy(),
            tile_size,
            list(tumour_polygons),
            list(exclusion_polygons),
        )
        label = np.full(len(coords), np.nan, dtype=np.float32)
        label[tumour >= tumour_min - 1e-9] = 1.0
        label[tumour <= normal_max + 1e-9] = 0.0
        coords["tumour_fraction"] = tumour.astype(np.float32)
        coords["label"] = label
        ambiguous = np.isnan(label)
        n_ambiguous = int(ambiguous.sum())
        coords = coords.loc[~ambiguous].reset_index(drop=True)
    coords["sampling_weight"] = np.float32(1.0)
    sampling: dict[str, Any] | None = None
    if max_tiles is not None and len(coords) > max_tiles:
        idx, sampling = _sample_balanced(coords["label"].to_numpy(dtype=float), int(max_tiles), seed)
        coords = coords.iloc[idx].reset_index(drop=True)
        # inverse inclusion probability of each kept tile's class: reweights class proportions back
        keys = np.where(
            coords["label"].isna(), "unknown", coords["label"].map({0.0: "normal", 1.0: "tumour"})
        )
        weights = {k: sampling["before"][k] / v for k, v in sampling["after"].items() if v > 0}
        coords["sampling_weight"] = np.array([weights[k] for k in keys], dtype=np.float32)
    coords = coords[list(COORD_COLUMNS)]
    info = {
        "n_grid": int(n_rows * n_cols),
        "n_tissue": int(n_tissue),
        "n_ambiguous_dropped": n_ambiguous,
        "sampling": sampling,
        "level": int(level),
        "read_px": int(read_px),
        "tile_size_px": float(tile_size),
        "actual_tile_mpp": float(tile_size * slide.mpp / tile_px),
        "tissue_mask_mpp": float(tissue.mpp),
        "tissue_mask_threshold": float(tissue.threshold),
    }
    return TilePlan(coords, level, read_px, tile_px, tile_size, info["actual_tile_mpp"], info, tissue)


def _tile_runs(rows: np.ndarray, cols: np.ndarray, band_cols: int) -> list[np.ndarray]:
    """Group tile indices into runs of horizontally adjacent tiles, band by band of ``band_cols`` grid
    columns (row after row inside a band), each run at most ``band_cols`` long."""
    band = cols // band_cols
    order = np.lexsort((cols, rows, band))
    b, r, c = band[order], rows[order], cols[order]
    breaks = np.flatnonzero((np.diff(b) != 0) | (np.diff(r) != 0) | (np.diff(c) != 1)) + 1
    return np.split(order, breaks)


def iter_tile_blocks(
    slide: Slide, plan: TilePlan, band_cols: int = 16
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Read the planned tiles: yields ``(row_indices, images uint8 (n, tile_px, tile_px, 3))``.

    Each ``read_region`` call reads one run of horizontally adjacent selected tiles (a "supertile"
    of up to ``band_cols`` tiles), so exactly the selected pixels are read with far fewer calls than
    one per tile. Runs are visited in vertical bands of ``band_cols`` grid columns, so the slide
    tiles that OpenSlide decodes for one row of runs are still in its cache for the next row (a row
    across a whole slide may not fit). Tiles are resized to ``tile_px`` when the read level does not
    match the target resolution exactly.
    """
    from PIL import Image

    coords = plan.coords
    if len(coords) == 0:
        return
    level, read_px, tile_px = plan.level, plan.read_px, plan.tile_px
    level_ds = slide.level_downsamples[level]
    resample = Image.Resampling.BOX if read_px > tile_px else Image.Resampling.BILINEAR
    rows = coords["grid_row"].to_numpy()
    cols = coords["grid_col"].to_numpy()
    for members in _tile_runs(rows, cols, max(1, int(band_cols))):
        r, c0 = int(rows[members[0]]), int(cols[members[0]])
        region = slide._read_rgb_view(
            (round(c0 * read_px * level_ds), round(r * read_px * level_ds)),
            level,
            (len(members) * read_px, read_px),
        )
        images = np.empty((len(members), tile_px, tile_px, 3), dtype=np.uint8)
        if read_px == tile_px:
            # (h, n·w, 3) -> (n, h, w, 3) in one copy
            images[:] = region.reshape(read_px, len(members), read_px, 3).transpose(1, 0, 2, 3)
        else:
            for k in range(len(members)):
                tile = np.ascontiguousarray(region[:, k * read_px : (k + 1) * read_px])
                images[k] = np.asarray(Image.fromarray(tile).resize((tile_px, tile_px), resample))
        yield members, images


def tile_slide(
    slide: Slide,
    tile_mpp: float = 0.5,
    tile_px: int = 224,
    tissue_threshold: float = 0.5,
    tumour_polygons: Sequence[np.ndarray] | None = None,
    tumour_min: float = 0.5,
    normal_max: float = 0.05,
    max_tiles: int | None = None,
    seed: int = 0,
    exclusion_polygons: Sequence[np.ndarray] = (),
    tissue: TissueMask | None = None,
    mask_mpp: float = 8.0,
    band_cols: int = 16,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Cut a slide into non-overlapping ``tile_px`` tiles at ``tile_mpp`` µm/px.

    Returns ``(images uint8 (N, tile_px, tile_px, 3), coords)``; ``coords`` columns: ``x_px, y_px``
    (level-0 top-left), ``x_um, y_um``, ``grid_row, grid_col``, ``tissue_fraction``,
    ``tumour_fraction``, ``label`` (1 tumour / 0 normal / NaN unknown), ``sampling_weight``
    (inverse sampling rate of the tile's class; 1 without sampling). ``coords.attrs`` records the read
    level, the level-0 tile size, the actual tile µm/px, dropped/ sampled counts.

    * Resolution: downsample = tile_mpp / slide.mpp → deepest level at or above that resolution →
      tiles of round(tile_px · downsample / level_downsample) px at that level, resized to ``tile_px``.
      The grid is regular at the read level, so the actual tile µm/px differs from ``tile_mpp`` by
      less than 0.5 / read_px (recorded).
    * Tissue: tiles with tissue fraction ≥ ``tissue_threshold`` (mask from :func:`detect_tissue`, or
      the ``tissue`` given); none → :class:`NoTissueError`.
    * Labels: ``tumour_polygons`` None → labels unknown (NaN); a list (possibly empty) → tumour
      fraction from the polygons minus ``exclusion_polygons``; ambiguous tiles (between ``normal_max``
      and ``tumour_min``) dropped.
    * ``max_tiles``: a seeded sample; every class keeps at least max_tiles // (2 · n_classes) tiles
      when it has them (so rare tumour tiles survive), the rest in proportion. This changes class
      proportions: ``sampling_weight`` and ``coords.attrs["sampling"]`` record it.
    * Reading: one ``read_region`` per run of up to ``band_cols`` adjacent tiles (see
      :func:`iter_tile_blocks`); never a whole level.
    """
    plan = plan_tiles(
        slide,
        tile_mpp=tile_mpp,
        tile_px=tile_px,
        tissue_threshold=tissue_threshold,
        tumour_polygons=tumour_polygons,
        exclusion_polygons=exclusion_polygons,
        tumour_min=tumour_min,
        normal_max=normal_max,
        max_tiles=max_tiles,
        seed=seed,
        tissue=tissue,
        mask_mpp=mask_mpp,
    )
    images = np.empty((len(plan.coords), tile_px, tile_px, 3), dtype=np.uint8)
    for members, block in iter_tile_blocks(slide, plan, band_cols=band_cols):
        images[members] = block
    coords = plan.coords.copy()
    coords.attrs.update(plan.info)
    return images, coords
