"""Whole-slide images → patches: opening slides, tissue detection, tiling, and the patch cache.

Pipeline (each step usable on its own)::

    manifest = read_manifest("cohort/manifest.csv")          # validated table of slides
    index = tile_cohort(manifest, "runs/patches")           # one HDF5 per slide + index.csv
    patches = load_patches("runs/patches", split="train")   # images (N, H, W, 3) uint8 + meta

Conventions
-----------
* Coordinates are level-0 pixels (``x_px``, ``y_px``: top-left corner of a tile) and micrometres
  (``x_um = x_px · mpp``). ``mpp`` is µm per level-0 pixel.
* MPP comes from the slide's metadata (``openslide.mpp-x``, then ``aperio.MPP``, then the TIFF
  resolution with its unit). ``open_slide(path, mpp_override=...)`` and the manifest's per-slide
  ``mpp`` column *override* the metadata (a warning is issued when they disagree by more than 10 %);
  ``default_mpp`` — the cohort-wide ``mpp_override`` of :func:`tile_cohort` and ``--mpp-override`` on
  the command line — is used only for slides *lacking* MPP metadata. Without any of them, opening
  fails with a message naming the file and these options. The MPP is never guessed.
* Labels: 1 = tumour (tumour fraction ≥ ``tumour_min``), 0 = normal (≤ ``normal_max``); tiles in
  between are *ambiguous* and dropped. A slide with an annotation file is labelled from its polygons;
  a slide without one whose manifest says ``has_tumour = 0`` is all normal (label 0); any other slide
  without annotation has *unknown* tile labels: ``label`` and ``tumour_fraction`` are NaN (tiles kept).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.core import io as mio
from mtlutils.core.progress import progress
from mtlutils.core.runtime import child_threads, set_threads

__all__ = [
    "SlideError",
    "SlideNotFoundError",
    "MissingMPPError",
    "NoTissueError",
    "ManifestError",
    "Slide",
    "open_slide",
    "TissueMask",
    "detect_tissue",
    "tile_slide",
    "TilePlan",
    "plan_tiles",
    "iter_tile_blocks",
    "tile_overlay",
    "mpp_from_properties",
    "read_manifest",
    "validate_manifest",
    "tile_cohort",
    "PatchSet",
    "load_patches",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
]

REQUIRED_COLUMNS = ("slide_id", "patient_id", "center", "split", "path")
OPTIONAL_COLUMNS = ("annotation", "has_tumour", "biomarker", "tme_score", "mpp")
#: MPP values outside this range (µm per pixel) are treated as absent metadata (e.g. a 72-dpi default).
PLAUSIBLE_MPP = (0.05, 100.0)
#: Version of the per-slide HDF5 layout; part of the cache key.
CACHE_FORMAT = 1
MPP_FIX = "pass mpp_override=<µm per pixel> in Python, --mpp-override on the command line, or fill the manifest's mpp column"


class SlideError(ValueError):
    """A slide cannot be opened, has no usable MPP, or cannot be tiled."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide path does not exist."""


class MissingMPPError(SlideError):
    """The slide carries no microns-per-pixel metadata and no override was given."""


class NoTissueError(SlideError):
    """Tissue detection found no tile with enough tissue."""


class ManifestError(ValueError):
    """A cohort manifest is missing, malformed or points to missing files."""


# --------------------------------------------------------------------------------------------------
# Opening slides
# --------------------------------------------------------------------------------------------------


def _plausible(mpp: float | None) -> bool:
    return mpp is not None and math.isfinite(mpp) and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]


def _float_or_none(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def mpp_from_properties(props: dict[str, str]) -> tuple[float | None, str]:
    """MPP (µm per level-0 px) and its source from OpenSlide properties; ``(None, "")`` when absent.

    Order: ``openslide.mpp-x``, ``aperio.MPP``, ``tiff.XResolution`` with ``tiff.ResolutionUnit``
    (centimeter or inch). Values outside :data:`PLAUSIBLE_MPP` are ignored.
    """
    for key in ("openslide.mpp-x", "aperio.MPP"):
        value = _float_or_none(props.get(key))
        if _plausible(value):
            return value, key
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    xres = _float_or_none(props.get("tiff.XResolution"))
    if xres and xres > 0 and unit in {"centimeter", "inch"}:
        value = (1e4 if unit == "centimeter" else 25400.0) / xres
        if _plausible(value):
            return value, "tiff.XResolution"
    return None, ""


def _looks_like_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head in {b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"}


class Slide:
    """An open whole-slide image with a known MPP (a thin wrapper around ``openslide.OpenSlide``).

    Attributes: ``path``, ``mpp`` (µm per level-0 px), ``mpp_source`` (property name or
    ``"override"``), ``dimensions`` (level-0 width, height), ``level_count``, ``level_dimensions``,
    ``level_downsamples``, ``properties``. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, handle: Any, mpp: float, mpp_source: str):
        self.path = path
        self._handle = handle
        self.mpp = float(mpp)
        self.mpp_source = mpp_source
        self.dimensions: tuple[int, int] = tuple(handle.dimensions)
        self.level_count: int = int(handle.level_count)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(tuple(d) for d in handle.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in handle.level_downsamples)
        self.properties: dict[str, str] = dict(handle.properties)

    def __repr__(self) -> str:
        return (
            f"Slide({self.path.name!r}, {self.dimensions[0]}x{self.dimensions[1]} px, mpp={self.mpp:.4g} "
            f"({self.mpp_source}), levels={self.level_count})"
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the OpenSlide handle (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample is ≤ ``downsample`` (0.1 % tolerance for rounding)."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001:
                best = level
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array (h, w, 3) of ``size`` = (w, h) pixels at ``level``, top-left ``location`` in
        level-0 px. Transparent pixels (outside the scanned area) are composited onto white.
        """
        return np.ascontiguousarray(self._read_rgb_view(location, level, size))

    def _read_rgb_view(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """As :meth:`read_region`, but possibly a strided view of an RGBA buffer (one copy fewer)."""
        if self._handle is None:
            raise SlideError(f"slide {self.path} is closed; open it again with open_slide()")
        import openslide

        try:
            image = self._handle.read_region(
                (int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1]))
            )
        except openslide.OpenSlideError as exc:
            raise SlideError(
                f"cannot read slide {self.path} at {location}, level {level} ({exc}); the file may be truncated or corrupt: copy it again"
            ) from None
        return _rgba_to_rgb(np.asarray(image))

    def read_scaled(self, downsample: float, max_band_px: int = 16_000_000) -> np.ndarray:
        """The whole slide as RGB at ≈ ``downsample`` level-0 px per output px (exact size
        round(W / downsample) x round(H / downsample)), built band by band from the best level with
        area (box) averaging, so no level is ever read whole into memory.
        """
        from PIL import Image

        width0, height0 = self.dimensions
        out_w, out_h = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
        level = self.best_level_for_downsample(downsample)
        level_w, level_h = self.level_dimensions[level]
        level_ds = self.level_downsamples[level]
        fy = level_h / out_h  # level px per output row
        rows_per_band = max(1, int(max_band_px / max(1.0, level_w * fy)))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for r0 in range(0, out_h, rows_per_band):
            r1 = min(out_h, r0 + rows_per_band)
            y_lo, y_hi = int(math.floor(r0 * fy)), min(level_h, int(math.ceil(r1 * fy)))
            band = self.read_region(
                (0, round(y_lo * level_ds)), level, (level_w, max(1, y_hi - y_lo))
            )  # contiguous for PIL
            box = (0.0, r0 * fy - y_lo, float(level_w), r1 * fy - y_lo)
            resized = Image.fromarray(band).resize((out_w, r1 - r0), Image.Resampling.BOX, box=box)
            out[r0:r1] = np.asarray(resized)
        return out


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's (non-premultiplied) RGBA onto white; uint8 (h, w, 3), possibly a view."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.size and alpha.min() < 255:
        a = alpha[..., None].astype(np.float32) / 255.0
        return (rgb.astype(np.float32) * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)
    return rgb


def open_slide(
    path: str | os.PathLike, mpp_override: float | None = None, default_mpp: float | None = None
) -> Slide:
    """Open a whole-slide image with OpenSlide and resolve its MPP (µm per level-0 px).

    ``mpp_override`` wins over metadata when given; ``default_mpp`` is used only when the slide has no
    MPP metadata. Errors (all :class:`SlideError`
    with one line naming the file and the fix): missing path, a folder, an empty file, a file
    OpenSlide does not recognise, a truncated/corrupt TIFF, and no MPP without override.
    """
    import openslide

    path = Path(path).expanduser()
    if not path.exists():
        raise SlideNotFoundError(
            f"slide {path} does not exist; check the path (relative paths in a manifest are relative to its folder)"
        )
    if path.is_dir():
        raise SlideError(
            f"slide path {path} is a folder; give the slide file itself (e.g. .svs, .tif, .ndpi, .mrxs)"
        )
    if path.stat().st_size == 0:
        raise SlideError(f"slide {path} is an empty file; copy the slide again")
    for name, value in (("mpp_override", mpp_override), ("default_mpp", default_mpp)):
        if value is not None and not _plausible(_float_or_none(value)):
            raise SlideError(
                f"{name}={value!r} for slide {path} is not a plausible µm-per-pixel value "
                f"(expected {PLAUSIBLE_MPP[0]}–{PLAUSIBLE_MPP[1]}; 0.25 at 40x, 0.5 at 20x)"
            )
    try:
        handle = openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError:
        if _looks_like_tiff(path):
            raise SlideError(
                f"slide {path} is a TIFF that OpenSlide cannot read (truncated, corrupt, or not tiled); copy it again or convert it to a tiled pyramidal TIFF"
            ) from None
        raise SlideError(
            f"slide {path} is not a whole-slide image format OpenSlide supports (.svs, .tif, .ndpi, .mrxs, .scn, ...); check the file"
        ) from None
    except openslide.OpenSlideError as exc:
        raise SlideError(
            f"slide {path} cannot be read ({exc}); the file may be truncated or corrupt: copy it again"
        ) from None
    props = dict(handle.properties)
    meta_mpp, source = mpp_from_properties(props)
    if mpp_override is not None:
        override = float(mpp_override)
        if meta_mpp is not None and abs(override - meta_mpp) > 0.1 * meta_mpp:
            warnings.warn(
                f"slide {path}: mpp_override={override} differs from its metadata ({source}={meta_mpp}); using the override",
                UserWarning,
                stacklevel=2,
            )
        return Slide(path, handle, override, "override")
    if meta_mpp is None and default_mpp is not None:
        return Slide(path, handle, float(default_mpp), "default_mpp")
    if meta_mpp is None:
        handle.close()
        raise MissingMPPError(f"slide {path} has no microns-per-pixel (MPP) metadata; {MPP_FIX}")
    return Slide(path, handle, meta_mpp, source)


# --------------------------------------------------------------------------------------------------
# Tissue detection
# --------------------------------------------------------------------------------------------------


@dataclass
class TissueMask:
    """Tissue mask of a slide at low resolution.

    ``mask``: bool (rows, cols); ``thumbnail``: RGB uint8 of the same size; ``downsample``: level-0 px
    per mask px (x, y); ``mpp``: µm per mask px; ``threshold``: the saturation (or grey) threshold used.
    """

    mask: np.ndarray
    thumbnail: np.ndarray
    downsample: tuple[float, float]
    mpp: float
    threshold: float
    method: str
    _integral: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def tissue_area_mm2(self) -> float:
        """Tissue area in mm²."""
        return float(self.mask.sum()) * self.mpp**2 / 1e6

    def fraction(
        self, x_px: np.ndarray, y_px: np.ndarray, width_px: float, height_px: float | None = None
    ) -> np.ndarray:
        """Area-weighted tissue fraction (0–1) of boxes with top-left (x_px, y_px) in level-0 px."""
        from scipy.ndimage import map_coordinates

        if self._integral is None:
            integral = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), dtype=np.float64)
            integral[1:, 1:] = self.mask.astype(np.float64).cumsum(0).cumsum(1)
            self._integral = integral
        height_px = width_px if height_px is None else height_px
        dx, dy = self.downsample
        rows, cols = self.mask.shape
        x0 = np.clip(np.asarray(x_px, dtype=float) / dx, 0, cols)
        x1 = np.clip((np.asarray(x_px, dtype=float) + width_px) / dx, 0, cols)
        y0 = np.clip(np.asarray(y_px, dtype=float) / dy, 0, rows)
        y1 = np.clip((np.asarray(y_px, dtype=float) + height_px) / dy, 0, rows)

        def cum(y: np.ndarray, x: np.ndarray) -> np.ndarray:
            # the continuous integral of a piecewise-constant mask is bilinear inside each cell
            return map_coordinates(self._integral, [y, x], order=1, mode="nearest")

        area = cum(y1, x1) - cum(y0, x1) - cum(y1, x0) + cum(y0, x0)
        full = (width_px / dx) * (height_px / dy)
        return np.clip(area / full, 0.0, 1.0)

    def overlay(self, color: tuple[int, int, int] = (0, 160, 60), alpha: float = 0.4) -> np.ndarray:
        """Thumbnail with tissue tinted in ``color`` (for quality-control pictures)."""
        out = self.thumbnail.astype(np.float32)
        out[self.mask] = (1 - alpha) * out[self.mask] + alpha * np.asarray(color, dtype=np.float32)
        return out.round().astype(np.uint8)


def _remove_small(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Drop 8-connected components of ``mask`` with at most ``max_px`` pixels."""
    from scipy import ndimage

    if max_px <= 0 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes > max_px
    keep[0] = False
    return keep[labels]


def detect_tissue(
    slide: Slide,
    mask_mpp: float = 8.0,
    method: str = "saturation",
    min_saturation: float = 0.07,
    close_um: float = 16.0,
    min_object_um2: float = 1e4,
    min_hole_um2: float = 1e4,
) -> TissueMask:
    """Tissue mask from a thumbnail at ≈ ``mask_mpp`` µm/px.

    ``method="saturation"``: HSV saturation above max(Otsu threshold, ``min_saturation``) — robust to
    white/grey background and to black out-of-scan areas; the floor keeps a slide that is only
    background (where Otsu would split sensor noise) free of "tissue". ``method="grey"``: grey level below Otsu
    (and below 0.9, so an all-white slide has no tissue). Then a closing with a disk of radius
    ``close_um``, removal of objects and holes smaller than ``min_object_um2`` / ``min_hole_um2`` µm².
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if method not in {"saturation", "grey"}:
        raise ValueError(f"detect_tissue: method={method!r} must be 'saturation' or 'grey'")
    if not mask_mpp > 0:
        raise ValueError(f"detect_tissue: mask_mpp={mask_mpp} must be > 0 µm per pixel")
    downsample = max(1.0, mask_mpp / slide.mpp)
    thumb = slide.read_scaled(downsample)
    dx, dy = slide.dimensions[0] / thumb.shape[1], slide.dimensions[1] / thumb.shape[0]
    px_mpp = slide.mpp * dx
    rgb = thumb.astype(np.float32) / 255.0
    if method == "saturation":
        vmax, vmin = rgb.max(axis=2), rgb.min(axis=2)
        value = np.where(vmax > 0, (vmax - vmin) / np.maximum(vmax, 1e-6), 0.0)
        otsu = threshold_otsu(value) if np.ptp(value) > 1e-6 else 1.0
        threshold = max(float(otsu), min_saturation)
        mask = value > threshold
    else:
        value = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        otsu = threshold_otsu(value) if np.ptp(value) > 1e-6 else 0.0
        threshold = min(float(otsu), 0.9)
        mask = value < threshold
    radius = max(1, round(close_um / px_mpp))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    padded = np.pad(mask, radius)
    mask = ndimage.binary_closing(padded, structure=disk)[radius:-radius, radius:-radius]
    mask = ~_remove_small(~mask, int(min_hole_um2 / px_mpp**2))
    mask = _remove_small(mask, int(min_object_um2 / px_mpp**2))
    return TissueMask(
        mask=mask, thumbnail=thumb, downsample=(dx, dy), mpp=px_mpp, threshold=threshold, method=method
    )


# --------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------


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
    if not tile_mpp > 0 or tile_px < 8:
        raise ValueError(f"tile_mpp={tile_mpp} must be > 0 and tile_px={tile_px} >= 8")
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
    columns = [
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
    ]
    coords = coords[columns]
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


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a cohort manifest (CSV); return it with absolute ``path``/``annotation``.

    Required columns: ``slide_id, patient_id, center, split, path``; optional: ``annotation`` (ASAP
    XML), ``has_tumour`` (0/1), ``biomarker``, ``tme_score``, ``mpp`` (per-slide override). Relative
    paths are resolved against the manifest's folder. Every problem raises :class:`ManifestError` with
    one line naming the manifest and the fix. Missing optional columns are added (empty).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; give the path of the cohort's CSV manifest")
    text_cols = {c: str for c in ("slide_id", "patient_id", "center", "split", "path", "annotation")}
    try:
        df = pd.read_csv(path, dtype=text_cols, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"manifest {path} is not a readable CSV ({str(exc).splitlines()[0]}); save it as comma-separated UTF-8"
        ) from None
    df.attrs["manifest_path"] = str(path)
    return validate_manifest(df, base_dir=path.parent, name=f"manifest {path}")


def validate_manifest(
    df: pd.DataFrame, base_dir: str | os.PathLike, name: str = "manifest table"
) -> pd.DataFrame:
    """Validate a manifest table (see :func:`read_manifest`) and return a cleaned copy: text columns
    stripped, optional columns added, ``path``/``annotation`` made absolute against ``base_dir`` and
    checked to exist, numeric columns parsed. ``name`` starts every error message.
    """
    manifest_path = df.attrs.get("manifest_path")
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name} lacks required column(s) {missing}; add them (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    if len(df) == 0:
        raise ManifestError(f"{name} has no rows; add one row per slide")
    for col in REQUIRED_COLUMNS:
        df[col] = df[col].astype("string").str.strip()
        empty = df[col].isna() | (df[col] == "")
        if empty.any():
            rows = (np.flatnonzero(empty.to_numpy()) + 2).tolist()[:5]
            raise ManifestError(f"{name}: column {col!r} is empty on CSV line(s) {rows}; fill it in")
        df[col] = df[col].astype(str)
    bad_ids = [s for s in df["slide_id"] if not _SAFE_ID.match(s)]
    if bad_ids:
        raise ManifestError(
            f"{name}: slide_id(s) {bad_ids[:5]} are not usable as file names; use letters, digits, '.', '_' and '-' only"
        )
    dup = df["slide_id"][df["slide_id"].duplicated()].unique().tolist()
    if dup:
        raise ManifestError(f"{name}: duplicate slide_id(s) {dup[:5]}; give every slide a unique id")
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    base = Path(base_dir)
    df["path"] = [
        str((base / p).resolve()) if not Path(p).expanduser().is_absolute() else str(Path(p).expanduser())
        for p in df["path"]
    ]
    absent = [p for p in df["path"] if not Path(p).is_file()]
    if absent:
        raise ManifestError(
            f"{name}: {len(absent)} slide file(s) not found, e.g. {absent[0]}; fix the path column (relative paths are relative to the manifest's folder)"
        )
    annotations = []
    for value in df["annotation"]:
        if pd.isna(value) or str(value).strip() == "":
            annotations.append(None)
            continue
        ann = Path(str(value).strip()).expanduser()
        ann = ann if ann.is_absolute() else (base / ann).resolve()
        if not ann.is_file():
            raise ManifestError(
                f"{name}: annotation file {ann} not found; fix the annotation column or leave it empty"
            )
        annotations.append(str(ann))
    df["annotation"] = pd.Series(annotations, index=df.index, dtype=object)
    for col in ("has_tumour", "tme_score", "mpp"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            raise ManifestError(
                f"{name}: column {col!r} has non-numeric value(s) {df.loc[bad, col].tolist()[:5]}; use numbers or leave empty"
            )
        df[col] = values.astype(float)
    if not df["has_tumour"].dropna().isin([0.0, 1.0]).all():
        raise ManifestError(f"{name}: has_tumour must be 0, 1 or empty; fix the column")
    if (df["mpp"].dropna() <= 0).any():
        raise ManifestError(f"{name}: mpp must be a positive number of µm per pixel or empty; fix the column")
    df = df.reset_index(drop=True)
    df.attrs["manifest_path"] = manifest_path
    return df


# --------------------------------------------------------------------------------------------------
# Cohort tiling and the patch cache
# --------------------------------------------------------------------------------------------------

_COORD_DATASETS = (
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
_SLIDE_META = ("slide_id", "patient_id", "center", "split", "has_tumour", "biomarker", "tme_score")


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _row_mpp(row: dict[str, Any]) -> float | None:
    """The manifest's per-slide ``mpp`` (an override of the metadata), or None when empty."""
    value = row.get("mpp")
    return float(value) if value is not None and not pd.isna(value) else None


def _check_slide_opens(row: dict[str, Any], mpp_override: float | None) -> None:
    """Open a manifest row's slide and resolve its MPP (raises the same one-line errors as tiling)."""
    with open_slide(row["path"], mpp_override=_row_mpp(row), default_mpp=mpp_override):
        pass


def _tile_one_slide(
    row: dict[str, Any], out_dir: str, params: dict[str, Any], mpp_override: float | None
) -> dict[str, Any]:
    """Tile one manifest row into ``out_dir/{slide_id}.h5`` unless an identical cache exists."""
    from mtlutils.data.annotations import read_asap_xml

    target = Path(out_dir) / f"{row['slide_id']}.h5"
    with open_slide(row["path"], mpp_override=_row_mpp(row), default_mpp=mpp_override) as slide:
        key = {
            **params,
            "format": CACHE_FORMAT,
            "mpp": slide.mpp,
            "slide_hash": slide.properties.get("openslide.quickhash-1"),  # content hash from OpenSlide
            "source_size": Path(row["path"]).stat().st_size,
            "annotation_sha": _file_digest(row.get("annotation")),
            "has_tumour": _clean(row.get("has_tumour")),
        }
        if target.exists():
            try:
                if mio.read_h5_attrs(target).get("cache_key") == key:
                    return {"slide_id": row["slide_id"], "skipped": True}
            except OSError:
                pass  # unreadable or corrupt cache: rebuild it
        if row.get("annotation"):
            polygons = read_asap_xml(row["annotation"])
            exclusions = read_asap_xml(row["annotation"], exclusions=True)
        elif _clean(row.get("has_tumour")) == 0:
            polygons, exclusions = [], []
        else:
            polygons, exclusions = None, []
        plan = plan_tiles(
            slide,
            tile_mpp=params["tile_mpp"],
            tile_px=params["tile_px"],
            tissue_threshold=params["tissue_threshold"],
            tumour_polygons=polygons,
            exclusion_polygons=exclusions,
            tumour_min=params["tumour_min"],
            normal_max=params["normal_max"],
            max_tiles=params["max_tiles_per_slide"],
            seed=params["seed"],
            mask_mpp=params["mask_mpp"],
        )
        n, tile_px = len(plan.coords), params["tile_px"]
        attrs = {
            "slide_id": row["slide_id"],
            "patient_id": row["patient_id"],
            "center": row["center"],
            "split": row["split"],
            "mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
            "tile_px": tile_px,
            "tile_mpp": params["tile_mpp"],
            "source": str(row["path"]),
            "n_tiles": n,
            "cache_key": key,
            **{k: v for k, v in plan.info.items()},
        }
        with mio.h5_writer(target, attrs) as h5:
            images = mio.create_h5_dataset(h5, "images", shape=(n, tile_px, tile_px, 3), dtype=np.uint8)
            for members, block in iter_tile_blocks(slide, plan):
                if np.all(np.diff(members) == 1):
                    images[int(members[0]) : int(members[-1]) + 1] = block  # runs are consecutive rows
                else:
                    for k, i in enumerate(members):
                        images[int(i)] = block[k]
            mio.create_h5_dataset(h5, "coords", data=plan.coords[["x_px", "y_px"]].to_numpy(np.int64))
            for col in _COORD_DATASETS:
                mio.create_h5_dataset(h5, col, data=plan.coords[col].to_numpy())
        if plan.tissue is not None:
            _save_png(
                Path(out_dir) / "qc" / f"{row['slide_id']}.png",
                tile_overlay(plan.tissue, plan.coords, plan.tile_size_px),
            )
    return {"slide_id": row["slide_id"], "skipped": False, "n_tiles": n}


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with mio.atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def tile_overlay(tissue: TissueMask, coords: pd.DataFrame, tile_size_px: float, scale: int = 2) -> np.ndarray:
    """Quality-control picture: the tissue overlay (enlarged ``scale`` x) with each tile's outline,
    red for tumour, green for normal, blue for unknown label. Returns RGB uint8."""
    picture = np.repeat(np.repeat(tissue.overlay(alpha=0.25), scale, axis=0), scale, axis=1)
    dx, dy = tissue.downsample
    colours = {1.0: (220, 30, 30), 0.0: (20, 150, 40)}
    h, w = picture.shape[:2]
    for x, y, label in zip(coords["x_px"], coords["y_px"], coords["label"], strict=True):
        colour = colours.get(float(label), (40, 80, 220)) if not pd.isna(label) else (40, 80, 220)
        x0, y0 = int(x / dx * scale), int(y / dy * scale)
        x1, y1 = (
            min(w - 1, int((x + tile_size_px) / dx * scale) - 1),
            min(h - 1, int((y + tile_size_px) / dy * scale) - 1),
        )
        if x1 <= x0 or y1 <= y0:
            continue
        picture[y0, x0 : x1 + 1] = colour
        picture[y1, x0 : x1 + 1] = colour
        picture[y0 : y1 + 1, x0] = colour
        picture[y0 : y1 + 1, x1] = colour
    return picture


def _as_manifest(manifest: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A validated manifest from a CSV path or a table (relative paths in a table: against the folder
    of the CSV it was read from, else the current folder)."""
    if isinstance(manifest, pd.DataFrame):
        source = manifest.attrs.get("manifest_path")
        base = Path(source).parent if source else Path.cwd()
        return validate_manifest(
            manifest, base_dir=base, name=f"manifest {source}" if source else "manifest table"
        )
    return read_manifest(manifest)


def tile_cohort(
    manifest: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    tile_mpp: float = 0.5,
    tile_px: int = 224,
    mpp_override: float | None = None,
    tissue_threshold: float = 0.5,
    max_tiles_per_slide: int | None = None,
    seed: int = 0,
    workers: int = 1,
    show_progress: bool = True,
    tumour_min: float = 0.5,
    normal_max: float = 0.05,
    mask_mpp: float = 8.0,
) -> pd.DataFrame:
    """Tile every slide of a manifest into a resumable patch cache; return the patch index.

    Writes ``out_dir/{slide_id}.h5`` (datasets ``images`` (N, tile_px, tile_px, 3) uint8 chunked per
    tile, ``coords`` (N, 2) level-0 px, and one dataset per coordinate column; attributes
    ``slide_id, center, split, mpp, tile_px, tile_mpp, source`` and the cache key), each atomically and
    skipped when already present with the same parameters; then ``out_dir/index.csv`` (one row per
    patch: slide metadata, coordinates, fractions, label, ``row`` within the slide file, ``file``) and
    ``out_dir/dataset.json`` (parameters and counts), and ``out_dir/qc/{slide_id}.png`` (tissue
    and tile outlines, see :func:`tile_overlay`). The cache key includes OpenSlide's content hash of
    the slide, the annotation's hash and every tiling parameter. MPP per slide: the manifest's ``mpp`` column
    when filled (overrides metadata), else the slide's metadata, else ``mpp_override`` (used only for
    slides lacking MPP metadata, like ``--mpp-override`` on the command line). ``workers`` > 1 tiles slides in a process pool (1 thread each).
    See :func:`tile_slide` for the tiling parameters and the module docstring for labels.
    """
    df = _as_manifest(manifest)
    out = mio.ensure_writable_dir(out_dir)
    params = {
        "tile_mpp": float(tile_mpp),
        "tile_px": int(tile_px),
        "tissue_threshold": float(tissue_threshold),
        "tumour_min": float(tumour_min),
        "normal_max": float(normal_max),
        "max_tiles_per_slide": None if max_tiles_per_slide is None else int(max_tiles_per_slide),
        "seed": int(seed),
        "mask_mpp": float(mask_mpp),
    }
    rows = [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    for row in rows:  # fail fast: a bad slide late in the list must not cost a long run first
        _check_slide_opens(row, mpp_override)

    def track(iterator: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
        return (
            list(progress(iterator, desc="tiling slides", total=len(rows)))
            if show_progress
            else list(iterator)
        )

    if workers <= 1:
        results = track(_tile_one_slide(r, str(out), params, mpp_override) for r in rows)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with child_threads(1):  # inherited by the workers before numpy loads
            pool = ProcessPoolExecutor(
                max_workers=int(workers), mp_context=ctx, initializer=set_threads, initargs=(1,)
            )
            futures = [pool.submit(_tile_one_slide, r, str(out), params, mpp_override) for r in rows]
        with pool:
            results = track(f.result() for f in futures)
    index, per_slide = _build_index(df, out)
    return _write_index(index, df, out, params, mpp_override, results, per_slide)


_SLIDE_SUMMARY = (
    "n_tiles",
    "n_grid",
    "n_tissue",
    "n_ambiguous_dropped",
    "sampling",
    "mpp",
    "mpp_source",
    "level",
    "read_px",
    "actual_tile_mpp",
)


def _build_index(df: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The patch index (one row per tile of every slide file) and a per-slide summary."""
    frames, per_slide = [], {}
    for row in df.to_dict(orient="records"):
        arrays, attrs = mio.read_h5(out / f"{row['slide_id']}.h5", keys=list(_COORD_DATASETS))
        per_slide[row["slide_id"]] = {k: attrs.get(k) for k in _SLIDE_SUMMARY}
        frame = pd.DataFrame(arrays)
        for col in _SLIDE_META:
            frame[col] = row.get(col)
        frame["mpp"] = attrs["mpp"]
        frame["row"] = np.arange(len(frame), dtype=np.int64)
        frame["file"] = f"{row['slide_id']}.h5"
        frames.append(frame)
    index = pd.concat(frames, ignore_index=True)
    first = list(_SLIDE_META) + [
        "x_px",
        "y_px",
        "x_um",
        "y_um",
        "tissue_fraction",
        "tumour_fraction",
        "label",
        "row",
        "file",
    ]
    return index[first + [c for c in index.columns if c not in first]], per_slide


def _write_index(
    index: pd.DataFrame,
    df: pd.DataFrame,
    out: Path,
    params: dict[str, Any],
    mpp_override: float | None,
    results: list[dict[str, Any]],
    per_slide: dict[str, dict[str, Any]],
) -> pd.DataFrame:
    with mio.atomic_path(out / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    summary = {
        "parameters": {**params, "mpp_override": mpp_override},
        "manifest": df.attrs.get("manifest_path"),
        "n_slides": int(len(df)),
        "n_patches": int(len(index)),
        "n_slides_skipped": int(sum(r.get("skipped", False) for r in results)),
        "patches_per_split": {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()},
        "labels": {
            "tumour": int((index["label"] == 1).sum()),
            "normal": int((index["label"] == 0).sum()),
            "unknown": int(index["label"].isna().sum()),
        },
        # True when max_tiles_per_slide subsampling changed class proportions (see sampling_weight)
        "sampled": any(info.get("sampling") for info in per_slide.values()),
        "slides": per_slide,
    }
    mio.atomic_write_json(out / "dataset.json", summary)
    return index


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
    """Load the patches written by :func:`tile_cohort`, optionally only some splits / centers.

    ``split``/``center``: a value or a list of values. An empty dataset or selection raises a one-line
    ``ValueError`` naming the folder and the available values.
    """
    folder = Path(patch_dir).expanduser()
    index_path = folder / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"patch folder {folder} has no index.csv; run slides.tile_cohort(manifest, {str(folder)!r}) first"
        )
    meta = pd.read_csv(
        index_path, dtype={"slide_id": str, "patient_id": str, "center": str, "split": str, "file": str}
    )
    if len(meta) == 0:
        raise ValueError(
            f"patch folder {folder} holds no patches; tile again with a lower tissue_threshold or check the slides"
        )
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
    first = mio.read_h5_attrs(folder / meta["file"].iloc[0])
    tile_px = int(first["tile_px"])
    images = np.empty((len(meta), tile_px, tile_px, 3), dtype=np.uint8)
    for file, group in meta.groupby("file", sort=False):
        path = folder / str(file)
        if not path.is_file():
            raise FileNotFoundError(
                f"patch file {path} listed in {index_path} is missing; run tile_cohort again to rebuild it"
            )
        arrays, _ = mio.read_h5(path, keys=["images"], rows=group["row"].to_numpy())
        images[group.index.to_numpy()] = arrays["images"]
    return PatchSet(images=images, meta=meta)
