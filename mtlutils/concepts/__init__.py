"""Nuclei segmentation and the diagnostic concepts of paper A, computed without any deep model.

A pathologist judges a patch by how many nuclei it holds, how large and how varied they are, how dark
they stain and how the tissue looks. This module measures those *concepts* on any RGB H&E image:

1. :func:`segment_nuclei` — tissue = stained pixels (optical density with colour, so neither white
   nor grey glass); colour deconvolution to the hematoxylin (H) optical density; an adaptive threshold
   (Otsu on H within the tissue, plus a local-contrast test that finds pale nuclei); small
   morphology; a watershed on a distance map (distance to background summed over the mask and two
   darker cores, so a pale gap between dark nuclei is a neck) that keeps two nuclei apart wherever
   the neck between them is deeper than ``split_depth_um``; finally each nucleus's edge is placed
   half-way (``edge_level``) between the background H and its own peak H, so areas are unbiased.
   Every size is a physical length or area (:class:`SegmentationParams`), so the same call works at
   0.25 µm/px (40x) and 0.5 µm/px (20x); nothing depends on absolute RGB values.
2. :func:`patch_concepts` — one dict of named concepts per patch (table :data:`CONCEPTS`: name →
   unit, description) plus quality-control fields (:data:`QC_FIELDS`). Missing is NaN, never a
   made-up constant: a patch without nuclei has ``count`` 0, ``area`` NaN and ``no_nuclei`` True.
3. :func:`extract_concepts` (arrays) and :func:`extract_patch_dir_concepts` (a patch dataset folder
   from ``mtlutils.data.slides.tile_cohort``) — batch extraction in worker processes with one thread
   each, cached per slide, resumable, written atomically.
4. :class:`ConceptScaler` — z-scores fitted on the training split only (NaN-aware), stored as JSON.
5. What the concepts track: :func:`read_concept_dataset` (concepts joined with labels and coordinates),
   :func:`concept_label_association` (desired: AUC for tumour vs normal, pooled and within each
   center), :func:`concept_center_association` (undesired: eta² and Kruskal–Wallis, optionally
   stratified by label so that a center's tumour prevalence is not mistaken for a center effect),
   :func:`ground_truth_agreement` (Spearman with known values) and :func:`normalisation_effect`.

Haralick texture uses a symmetric grey-level co-occurrence matrix (GLCM) of the grey image quantised
to 32 levels, distance 1 px, angles 0°, 45°, 90°, 135°; each property is averaged over the 4 angles
(identical to ``skimage.feature.graycomatrix`` + ``graycoprops``, but computed with ``bincount`` so
that it can be restricted to pixel pairs inside the same nucleus).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi

from mtlutils.core.runtime import child_threads, set_threads

if TYPE_CHECKING:  # pandas is imported lazily: worker processes do not need it
    import pandas as pd

__all__ = [
    "CLASS_NAMES",
    "CONCEPTS",
    "CONCEPT_COLUMNS",
    "QC_FIELDS",
    "ConceptInfo",
    "ConceptScaler",
    "SegmentationParams",
    "concept_center_association",
    "concept_label_association",
    "concept_table",
    "extract_concepts",
    "extract_concepts_cli",
    "extract_patch_dir_concepts",
    "glcm_features",
    "ground_truth_agreement",
    "hematoxylin_od",
    "normalisation_effect",
    "nuclei_properties",
    "patch_concepts",
    "patch_dir_mpp",
    "read_concept_dataset",
    "read_concepts",
    "segment_nuclei",
    "tissue_mask",
]

# --------------------------------------------------------------------------------------------------
# The concepts table
# --------------------------------------------------------------------------------------------------


class ConceptInfo(NamedTuple):
    """Unit and one-line description of a concept."""

    unit: str
    description: str


CONCEPTS: dict[str, ConceptInfo] = {
    "count": ConceptInfo("nuclei/mm²", "nuclei density: segmented nuclei per mm² of tissue in the patch"),
    "area": ConceptInfo("µm²", "mean nuclear area (pixels inside each nuclear contour × mpp²)"),
    "area_cv": ConceptInfo("1", "size pleomorphism: coefficient of variation (SD/mean) of nuclear areas"),
    "eccentricity_sd": ConceptInfo(
        "1", "shape pleomorphism: SD of nuclear eccentricity (0 = circle, 1 = line)"
    ),
    "hematoxylin": ConceptInfo("OD", "mean hematoxylin optical density inside nuclei (chromatin staining)"),
    "contrast": ConceptInfo(
        "levels²", "Haralick contrast of the whole patch (grey, 32 levels, d=1, 4 angles)"
    ),
    "correlation": ConceptInfo(
        "1", "Haralick correlation of the whole patch (grey, 32 levels, d=1, 4 angles)"
    ),
    "nuclear_contrast": ConceptInfo("levels²", "Haralick contrast of pixel pairs inside the same nucleus"),
    "nuclear_correlation": ConceptInfo("1", "Haralick correlation of pixel pairs inside the same nucleus"),
}

QC_FIELDS: dict[str, ConceptInfo] = {
    "n_nuclei": ConceptInfo("nuclei", "number of segmented nuclei in the patch"),
    "tissue_fraction": ConceptInfo("1", "fraction of the patch covered by tissue (optical-density mask)"),
    "no_tissue": ConceptInfo(
        "flag", "tissue_fraction < min_tissue_fraction: every concept but the patch texture is NaN"
    ),
    "no_nuclei": ConceptInfo("flag", "tissue but no nucleus found: count is 0, nuclear concepts are NaN"),
}

#: Concepts that need at least two nuclei (a spread of one value is undefined).
_NEEDS_TWO = ("area_cv", "eccentricity_sd")
#: Concepts measured on nuclei (NaN without nuclei).
_NUCLEAR = ("area", "area_cv", "eccentricity_sd", "hematoxylin", "nuclear_contrast", "nuclear_correlation")


def concept_table() -> pd.DataFrame:
    """The concepts and quality-control fields as a table (name, kind, unit, description)."""
    import pandas as pd

    rows = [(name, "concept", *info) for name, info in CONCEPTS.items()]
    rows += [(name, "qc", *info) for name, info in QC_FIELDS.items()]
    return pd.DataFrame(rows, columns=["name", "kind", "unit", "description"])


# --------------------------------------------------------------------------------------------------
# Parameters and input checks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationParams:
    """Settings of :func:`segment_nuclei`; lengths in µm, areas in µm², optical densities in OD units.

    The defaults were checked by eye on real H&E (skin, 0.5 and 0.25 µm/px) and are not tuned to the
    synthetic cohort. Thresholds are relative to each patch's own hematoxylin statistics, so they follow
    a change of stain; only the tissue test and ``min_contrast_od`` are absolute optical densities.
    """

    smooth_um: float = 0.5  #: Gaussian smoothing of the H channel before thresholding
    tissue_od: float = 0.15  #: summed RGB optical density above which a (smoothed) pixel is tissue ...
    tissue_chroma_od: float = 0.05  #: ... if its OD chroma (max − min over RGB) also exceeds this
    tissue_smooth_um: float = 2.0  #: smoothing of the optical density for the tissue mask
    min_tissue_fraction: float = 0.05  #: below this the patch is flagged ``no_tissue``
    min_contrast_od: float = 0.06  #: span = Otsu − mean H of the pale class; below this: no nuclei
    pale_level: float = 0.35  #: pale nuclei: H above (pale class mean) + pale_level × span ...
    pale_local: float = 0.25  #: ... and above the local mean H by pale_local × span
    local_window_um: float = 20.0  #: side of the box that defines the local mean H
    hole_area_um2: float = 20.0  #: holes inside a nucleus smaller than this are filled
    open_radius_um: float = 1.0  #: opening radius: removes threads thinner than ~2 radii
    min_area_um2: float = 10.0  #: objects and watershed fragments smaller than this are dropped
    core_levels: int = 2  #: darker cores whose distance maps are added to the mask's (see _segment)
    core_step: float = 0.5  #: core k is H > Otsu + k × core_step × span
    peak_distance_um: float = 2.0  #: minimum distance between two nucleus centres (markers)
    split_depth_um: float = 0.3  #: markers stay apart if the neck between them is this deep (summed map)
    edge_level: float = 0.45  #: nucleus edge: this fraction of the way from background H to its peak
    max_mpp: float = 0.6  #: coarser images are refused (nuclei would be a few pixels across)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SegmentationParams.{f.name}={value!r} must be a finite number >= 0")


DEFAULT_PARAMS = SegmentationParams()
MIN_SIDE_PX = 32  #: smallest patch side accepted (GLCM and segmentation need room)


def _check_image(image: Any, name: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 array or raise a one-line ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array of shape (H, W, 3) uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (drop alpha with image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise ValueError(f"{name} must be RGB of shape (H, W, 3), got shape {image.shape}{hint}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 (0-255), got {image.dtype}; convert with "
            "np.clip(image, 0, 255).astype(np.uint8) (multiply [0, 1] floats by 255 first)"
        )
    if min(image.shape[:2]) < MIN_SIDE_PX:
        raise ValueError(
            f"{name} is {image.shape[0]}x{image.shape[1]} px; nuclei and texture need at least "
            f"{MIN_SIDE_PX}x{MIN_SIDE_PX} px: use larger patches"
        )
    return np.ascontiguousarray(image)


def _check_mpp(mpp: Any, params: SegmentationParams) -> float:
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise ValueError(
            f"mpp={mpp!r} must be a number of µm per pixel (e.g. 0.25 at 40x, 0.5 at 20x)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"mpp={mpp!r} must be a positive number of µm per pixel (e.g. 0.25 at 40x)")
    if value > params.max_mpp:
        raise ValueError(
            f"mpp={value:g} µm/px is too coarse for nuclei (a nucleus would be a few px across); "
            f"read the patches at <= 0.5 µm/px (max accepted {params.max_mpp:g})"
        )
    if value < 0.05:
        raise ValueError(f"mpp={value:g} µm/px is implausibly fine; pass micrometres per pixel, not mm or nm")
    return value


# --------------------------------------------------------------------------------------------------
# Colour deconvolution and tissue
# --------------------------------------------------------------------------------------------------

# Ruifrok & Johnston stain vectors (rows: hematoxylin, eosin, residual/DAB), normalised.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
# Optical density of each 8-bit value: OD = -log10((I + 1) / 256), 0 for white.
_OD_LUT = (-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
# Hematoxylin OD contributed by each 8-bit value of channel c: OD(I) × (HED_FROM_RGB)[c, H].
_H_LUTS = tuple((_OD_LUT.astype(np.float64) * _HED_FROM_RGB[c, 0]).astype(np.float32) for c in range(3))


def _od_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hematoxylin OD, summed RGB OD, OD chroma = max − min over RGB), each (H, W) float32.

    Table look-ups only (no BLAS threads). The chroma is ~0 for white *and* for grey glass, which a
    summed optical density alone cannot tell from faint tissue.
    """
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    h = _H_LUTS[0][r] + _H_LUTS[1][g] + _H_LUTS[2][b]
    od_r, od_g, od_b = _OD_LUT[r], _OD_LUT[g], _OD_LUT[b]
    density = od_r + od_g + od_b
    chroma = np.maximum(np.maximum(od_r, od_g), od_b) - np.minimum(np.minimum(od_r, od_g), od_b)
    return h, density, chroma


def hematoxylin_od(image: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density (H, W) float32 of an RGB uint8 image (Ruifrok H&E deconvolution)."""
    return _od_maps(_check_image(image))[0]


def _tissue_from_od(
    density: np.ndarray, chroma: np.ndarray, mpp: float, params: SegmentationParams
) -> np.ndarray:
    sigma = params.tissue_smooth_um / mpp
    if sigma > 0:
        density = ndi.gaussian_filter(density, sigma, truncate=3.0)
        chroma = ndi.gaussian_filter(chroma, sigma, truncate=3.0)
    return (density > params.tissue_od) & (chroma > params.tissue_chroma_od)


def tissue_mask(image: np.ndarray, mpp: float, params: SegmentationParams = DEFAULT_PARAMS) -> np.ndarray:
    """Boolean (H, W) tissue mask: smoothed summed optical density above ``params.tissue_od`` and
    smoothed OD chroma above ``params.tissue_chroma_od`` (stained, not white or grey glass)."""
    image = _check_image(image)
    _, density, chroma = _od_maps(image)
    return _tissue_from_od(density, chroma, _check_mpp(mpp, params), params)


# --------------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------------


def _disk(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px**2 + 0.5


def _drop_small(labels: np.ndarray, n: int, min_px: float) -> np.ndarray:
    """Zero the labels of ``labels`` (ids 1..n) with fewer than ``min_px`` pixels."""
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    small = sizes < min_px
    small[0] = False
    if small.any():
        labels = labels.copy()
        labels[small[labels]] = 0
    return labels


def _remove_small_objects(mask: np.ndarray, min_px: float) -> np.ndarray:
    labels, n = ndi.label(mask)
    return _drop_small(labels, n, min_px) > 0


def _fill_small_holes(mask: np.ndarray, max_px: float) -> np.ndarray:
    holes, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel(), minlength=n + 1)
    fill = sizes <= max_px
    fill[0] = False
    # a background region touching the border is not a hole
    border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
    fill[border] = False
    return mask | fill[holes]


def _nuclear_foreground(
    h: np.ndarray, tissue: np.ndarray, mpp: float, params: SegmentationParams
) -> tuple[np.ndarray, float, float]:
    """Nuclear pixels by an adaptive threshold of the smoothed H channel within tissue.

    Otsu splits the tissue's H values into a pale (stroma, cytoplasm) and a dark class; ``span`` is
    the Otsu threshold minus the pale class's mean, a stain-relative contrast unit that stays defined
    when nuclei cover most of the patch. Returns (mask, pale class mean, span); an empty mask when the
    tissue has no dark population (``span < min_contrast_od``).
    """
    from skimage.filters import threshold_otsu

    nothing = np.zeros(h.shape, dtype=bool)
    values = h[tissue]
    if values.size < 16 or float(values.max() - values.min()) < 1e-6:
        return nothing, math.nan, math.nan
    otsu = float(threshold_otsu(values))
    pale_mean = float(values[values <= otsu].mean())
    span = otsu - pale_mean
    if span < params.min_contrast_od:  # tissue without a dark (nuclear) population
        return nothing, pale_mean, span
    foreground = h > otsu
    if params.pale_local > 0 or params.pale_level > 0:
        window = max(3, int(round(params.local_window_um / mpp)) | 1)
        # local background: mean H of the nearby pale-class tissue (dark nuclei do not raise it)
        background = tissue & (h <= otsu)
        weight = ndi.uniform_filter(background.astype(np.float32), size=window)
        total = ndi.uniform_filter(np.where(background, h, np.float32(0)), size=window)
        local_bg = np.where(weight > 1e-3, total / np.maximum(weight, 1e-3), np.float32(pale_mean))
        pale = (h > pale_mean + params.pale_level * span) & (h - local_bg > params.pale_local * span)
        foreground |= pale
    foreground &= tissue
    px_area = mpp * mpp
    foreground = _fill_small_holes(foreground, params.hole_area_um2 / px_area)
    radius = int(round(params.open_radius_um / mpp))
    if radius >= 1:
        foreground = ndi.binary_opening(foreground, structure=_disk(radius))
    return _remove_small_objects(foreground, params.min_area_um2 / px_area), pale_mean, span


def _label_max(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` per label 0..n (-inf for absent labels; label 0 is ignored)."""
    inside = labels > 0
    ids, vals = labels[inside], values[inside]
    out = np.full(n + 1, -np.inf, dtype=np.float64)
    if ids.size:
        order = np.argsort(ids, kind="stable")
        ids, vals = ids[order], vals[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        out[ids[starts]] = np.maximum.reduceat(vals, starts)
    return out


def _merge_shallow_basins(
    labels: np.ndarray, n: int, dist: np.ndarray, depth: float
) -> tuple[np.ndarray, int]:
    """Merge adjacent watershed basins whose separating neck is shallower than ``depth`` (px).

    For two touching basins a and b with peaks p_a, p_b (maximum distance-to-background) and saddle s
    (highest point on their common border), they are one nucleus when min(p_a, p_b) − s < depth —
    the "dynamics" criterion of an h-maxima transform, computed on the basin graph instead of by
    morphological reconstruction (which is ~10x slower).
    """
    if n < 2 or depth <= 0:
        return labels, n
    peaks = _label_max(labels, dist, n)
    lows, highs, saddles = [], [], []
    for a_sl, b_sl in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        a, b = labels[a_sl], labels[b_sl]
        border = (a != b) & (a > 0) & (b > 0)
        if not border.any():
            continue
        la, lb = a[border], b[border]
        lows.append(np.minimum(la, lb))
        highs.append(np.maximum(la, lb))
        saddles.append(np.minimum(dist[a_sl][border], dist[b_sl][border]))
    if not lows:
        return labels, n
    low, high, saddle = np.concatenate(lows), np.concatenate(highs), np.concatenate(saddles)
    key = low.astype(np.int64) * (n + 1) + high
    order = np.lexsort((saddle, key))  # by key, then saddle ascending: the last of each key is its max
    key, saddle, low, high = key[order], saddle[order], low[order], high[order]
    last = np.r_[key[1:] != key[:-1], True]
    low, high, saddle = low[last], high[last], saddle[last]
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = False
    for k in np.argsort(-saddle, kind="stable"):  # flood from the highest saddle down
        ra, rb = root(int(low[k])), root(int(high[k]))
        if ra == rb:
            continue
        if min(peaks[ra], peaks[rb]) - saddle[k] < depth:
            parent[rb] = ra
            peaks[ra] = max(peaks[ra], peaks[rb])
            merged = True
    if not merged:
        return labels, n
    roots = np.array([root(i) for i in range(n + 1)])
    _, relabel = np.unique(roots, return_inverse=True)  # root 0 stays 0 (the smallest)
    return relabel[labels].astype(np.int32), int(relabel.max())


def _octagonal_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (px) to the nearest background pixel, as the mean of the city-block and chessboard
    chamfer distances: an octagonal approximation of the Euclidean one, ~2x faster to compute."""
    taxicab = ndi.distance_transform_cdt(mask, metric="taxicab")
    chessboard = ndi.distance_transform_cdt(mask, metric="chessboard")
    return (taxicab + chessboard).astype(np.float32) * np.float32(0.5)


def _trim_to_edges(
    labels: np.ndarray, n: int, h: np.ndarray, background: float, edge_level: float, min_px: float
) -> np.ndarray:
    """Move each nucleus's edge to ``edge_level`` of the way from ``background`` to its own peak H.

    The pale-nucleus test also accepts the blurred rim around dark nuclei, which would inflate their
    area; placing every edge at (by default) half its own contrast — its peak being the 90th
    percentile of its H — gives unbiased areas for both dark and pale nuclei. Pixels dropped this
    way but enclosed by a nucleus (a pale centre, chromatin margination) are kept.
    """
    inside = labels > 0
    ids, values = labels[inside], h[inside]
    order = np.lexsort((values, ids))
    ids, values = ids[order], values[order]
    counts = np.bincount(ids, minlength=n + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    peak = np.full(n + 1, np.inf, dtype=np.float64)
    peak[has] = values[starts[has] + (0.9 * (counts[has] - 1)).astype(np.int64)]
    level = background + edge_level * (peak - background)
    keep = inside & (h >= level[labels].astype(np.float32))
    keep = ndi.binary_fill_holes(keep) & inside
    # a nucleus is never lost here: one that would shrink below min_px keeps its untrimmed pixels
    kept = np.bincount(labels[keep], minlength=n + 1)
    keep |= inside & (kept < min_px)[labels]
    return np.where(keep, labels, 0).astype(np.int32)


def _segment(image: np.ndarray, mpp: float, params: SegmentationParams) -> tuple[np.ndarray, dict[str, Any]]:
    """Segmentation on checked inputs; returns labels and the intermediate images reused by concepts."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    h, density, chroma = _od_maps(image)
    tissue = _tissue_from_od(density, chroma, mpp, params)
    sigma = params.smooth_um / mpp
    h_smooth = ndi.gaussian_filter(h, sigma, truncate=3.0) if sigma > 0 else h
    extras = {"h": h, "tissue": tissue}
    foreground, pale_mean, span = _nuclear_foreground(h_smooth, tissue, mpp, params)
    otsu = pale_mean + span
    if not foreground.any():
        return np.zeros(image.shape[:2], dtype=np.int32), extras

    # distance to background, summed over the mask and its darker cores: a pale gap between two dark
    # nuclei becomes a neck even where the Otsu mask joins them
    dist = _octagonal_distance(foreground)
    for k in range(1, int(params.core_levels) + 1):
        core = foreground & (h_smooth > otsu + k * params.core_step * span)
        if core.any():
            dist += _octagonal_distance(core)
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma, truncate=3.0)
    components, n_components = ndi.label(foreground)
    peaks = peak_local_max(
        dist, min_distance=max(1, int(round(params.peak_distance_um / mpp))), exclude_border=False
    )
    markers = np.zeros(foreground.shape, dtype=np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    labels = watershed(-dist, markers, mask=foreground).astype(np.int32)
    n = len(peaks)
    # components whose only peak was suppressed by a higher peak of a neighbour: one label each
    unlabelled = foreground & (labels == 0)
    if unlabelled.any():
        missing = np.unique(components[unlabelled])
        lut = np.zeros(n_components + 1, dtype=np.int32)
        lut[missing] = np.arange(n + 1, n + 1 + len(missing), dtype=np.int32)
        labels = np.where(unlabelled, lut[components], labels)
        n += len(missing)
    labels, n = _merge_shallow_basins(labels, n, dist, params.split_depth_um / mpp)
    min_px = params.min_area_um2 / (mpp * mpp)
    labels = _drop_small(labels, n, min_px)
    if params.edge_level > 0:
        labels = _trim_to_edges(labels, n, h_smooth, pale_mean, params.edge_level, min_px)
    # consecutive ids 1..n
    ids = np.unique(labels)
    lut = np.zeros(int(ids.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(len(ids), dtype=np.int32)
    return lut[labels], extras


def segment_nuclei(image: np.ndarray, mpp: float, params: SegmentationParams = DEFAULT_PARAMS) -> np.ndarray:
    """Instance label image (H, W) int32 of the nuclei in an RGB uint8 H&E ``image`` at ``mpp`` µm/px.

    0 is background, 1..n the nuclei. Works at any resolution up to ``params.max_mpp`` (default 0.6
    µm/px); sizes are physical (see :class:`SegmentationParams`). Blank or nucleus-free images give an
    all-zero image.
    """
    image = _check_image(image)
    mpp = _check_mpp(mpp, params)
    labels, _ = _segment(image, mpp, params)
    return labels


# --------------------------------------------------------------------------------------------------
# Per-nucleus properties and texture
# --------------------------------------------------------------------------------------------------


def nuclei_properties(labels: np.ndarray, mpp: float, h: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-nucleus area (µm²), eccentricity, centroid (px) and, given ``h``, mean hematoxylin OD.

    Vectorised with ``bincount`` (no per-nucleus loop). Eccentricity matches
    ``skimage.measure.regionprops``: sqrt(1 − λ₂/λ₁) of the pixel-coordinate covariance.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    out: dict[str, np.ndarray] = {"area_um2": counts * mpp * mpp}
    if n == 0:
        empty = np.zeros(0)
        out.update(eccentricity=empty, centroid_row=empty, centroid_col=empty)
        if h is not None:
            out["hematoxylin"] = empty
        return out
    inside = flat > 0
    ids = flat[inside]
    rows, cols = np.divmod(np.flatnonzero(inside), labels.shape[1])
    rows, cols = rows.astype(np.float64), cols.astype(np.float64)
    safe = np.maximum(counts, 1)

    def mean_of(values: np.ndarray) -> np.ndarray:
        return np.bincount(ids, weights=values, minlength=n + 1)[1:] / safe

    mr, mc = mean_of(rows), mean_of(cols)
    vrr = mean_of(rows * rows) - mr**2
    vcc = mean_of(cols * cols) - mc**2
    vrc = mean_of(rows * cols) - mr * mc
    half_trace = (vrr + vcc) / 2
    root = np.sqrt(np.maximum(((vrr - vcc) / 2) ** 2 + vrc**2, 0))
    l1, l2 = half_trace + root, np.maximum(half_trace - root, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ecc = np.where(l1 > 1e-12, np.sqrt(np.clip(1 - l2 / np.where(l1 > 1e-12, l1, 1), 0, 1)), 0.0)
    out.update(eccentricity=ecc, centroid_row=mr, centroid_col=mc)
    if h is not None:
        out["hematoxylin"] = mean_of(np.asarray(h, dtype=np.float64).ravel()[inside])
    return out


GLCM_LEVELS = 32
# (row, col) offsets of distance 1 at 0°, 45°, 90°, 135° (the sign is irrelevant: the GLCM is symmetric)
_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))


def _grey_levels(image: np.ndarray, levels: int = GLCM_LEVELS) -> np.ndarray:
    """Luma (ITU-R 601) of an RGB uint8 image quantised to ``levels`` grey levels (uint8)."""
    grey = (
        image[..., 0] * np.float32(0.299)
        + image[..., 1] * np.float32(0.587)
        + image[..., 2] * np.float32(0.114)
    )
    return np.minimum(grey * np.float32(levels / 256.0), levels - 1).astype(np.uint8)


def glcm_features(
    levels_image: np.ndarray, levels: int = GLCM_LEVELS, regions: np.ndarray | None = None
) -> tuple[float, float]:
    """Haralick (contrast, correlation) of a quantised image, averaged over the 4 angles at distance 1.

    ``levels_image``: integers in [0, levels). ``regions``: optional label image; only pixel pairs
    with both pixels in the same non-zero region count (texture *within* nuclei). An angle without
    any pair is skipped; correlation is NaN when the grey levels do not vary (it is undefined then),
    and both are NaN when no pair exists at all.
    """
    q = np.asarray(levels_image)
    if q.ndim != 2 or min(q.shape) < 2:
        raise ValueError(f"glcm_features needs a 2-D image of at least 2x2 px, got shape {q.shape}")
    q = q.astype(np.intp, copy=False)
    if q.size and (q.min() < 0 or q.max() >= levels):
        raise ValueError(f"glcm_features: grey levels must lie in [0, {levels}), got [{q.min()}, {q.max()}]")
    h, w = q.shape
    i_idx, j_idx = np.indices((levels, levels))
    contrasts, correlations = [], []
    for dr, dc in _OFFSETS:
        a_sl = (slice(max(0, -dr), h - max(0, dr)), slice(max(0, -dc), w - max(0, dc)))
        b_sl = (slice(max(0, dr), h + min(0, dr)), slice(max(0, dc), w + min(0, dc)))
        a, b = q[a_sl], q[b_sl]
        if regions is not None:
            ra, rb = regions[a_sl], regions[b_sl]
            keep = (ra == rb) & (ra > 0)
            a, b = a[keep], b[keep]
        pair = a.ravel() * levels + b.ravel()
        counts = np.bincount(pair, minlength=levels * levels).reshape(levels, levels).astype(np.float64)
        counts += counts.T
        total = counts.sum()
        if total == 0:
            continue
        p = counts / total
        contrasts.append(float((p * (i_idx - j_idx) ** 2).sum()))
        mean = float((p * i_idx).sum())
        var = float((p * (i_idx - mean) ** 2).sum())
        correlations.append(
            float((p * (i_idx - mean) * (j_idx - mean)).sum() / var) if var > 1e-12 else math.nan
        )
    if not contrasts:
        return math.nan, math.nan
    corr = math.nan if any(math.isnan(c) for c in correlations) else float(np.mean(correlations))
    return float(np.mean(contrasts)), corr


# --------------------------------------------------------------------------------------------------
# Concepts of one patch
# --------------------------------------------------------------------------------------------------


def _concepts_from_segmentation(
    image: np.ndarray,
    labels: np.ndarray,
    extras: Mapping[str, np.ndarray],
    mpp: float,
    params: SegmentationParams,
) -> dict[str, Any]:
    tissue = extras["tissue"]
    tissue_fraction = float(tissue.mean())
    grey = _grey_levels(image)
    contrast, correlation = glcm_features(grey)
    out: dict[str, Any] = dict.fromkeys(CONCEPTS, math.nan)
    out.update(contrast=contrast, correlation=correlation)
    n = int(labels.max())
    out["n_nuclei"] = n
    out["tissue_fraction"] = tissue_fraction
    out["no_tissue"] = tissue_fraction < params.min_tissue_fraction
    out["no_nuclei"] = (not out["no_tissue"]) and n == 0
    if out["no_tissue"]:
        return out
    tissue_mm2 = float(tissue.sum()) * mpp * mpp * 1e-6
    out["count"] = n / tissue_mm2
    if n == 0:
        return out
    props = nuclei_properties(labels, mpp, extras["h"])
    areas = props["area_um2"]
    out["area"] = float(areas.mean())
    out["hematoxylin"] = float(props["hematoxylin"].mean())
    if n >= 2:
        out["area_cv"] = float(areas.std(ddof=1) / areas.mean())
        out["eccentricity_sd"] = float(props["eccentricity"].std(ddof=1))
    out["nuclear_contrast"], out["nuclear_correlation"] = glcm_features(grey, regions=labels)
    return out


def patch_concepts(
    image: np.ndarray, mpp: float, params: SegmentationParams = DEFAULT_PARAMS, return_labels: bool = False
) -> dict[str, Any] | tuple[dict[str, Any], np.ndarray]:
    """Named concepts of one RGB uint8 patch at ``mpp`` µm/px (see :data:`CONCEPTS`, :data:`QC_FIELDS`).

    Returns a dict with every concept (float, NaN when undefined) and the QC fields ``n_nuclei``,
    ``tissue_fraction``, ``no_tissue``, ``no_nuclei``. With ``return_labels=True`` also returns the
    nuclei label image, for overlays.
    """
    image = _check_image(image)
    mpp = _check_mpp(mpp, params)
    labels, extras = _segment(image, mpp, params)
    out = _concepts_from_segmentation(image, labels, extras, mpp, params)
    return (out, labels) if return_labels else out


# --------------------------------------------------------------------------------------------------
# Batch extraction: arrays of images and patch dataset folders
# --------------------------------------------------------------------------------------------------

CONCEPT_COLUMNS: tuple[str, ...] = (*CONCEPTS, *QC_FIELDS)
CONCEPTS_VERSION = 1  #: bump when the algorithm changes, so that caches are recomputed
CACHE_DIR = "concepts_cache"
CONCEPTS_FILE = "concepts.csv"
SCALER_FILE = "concept_scaler.json"


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
    return _rows_to_arrays([patch_concepts(img, mpp, params) for img, mpp in zip(images, mpps, strict=True)])


def _concepts_of_h5_rows(
    path: str, start: int, stop: int, mpp: float, params: SegmentationParams
) -> dict[str, np.ndarray]:
    from mtlutils.core import io as mio

    arrays, _ = mio.read_h5(path, keys=["images"], rows=np.arange(start, stop))
    images = arrays["images"]
    return _concepts_of_images(list(images), [mpp] * len(images), params)


def _run_tasks(
    func: Any, tasks: Sequence[tuple[Any, ...]], workers: int, desc: str
) -> Iterable[tuple[int, dict[str, np.ndarray]]]:
    """Yield (task index, result) for ``func(*task)``, in a spawn process pool when workers > 1."""
    from mtlutils.core.progress import progress

    total = len(tasks)
    if total == 0:
        return
    if workers <= 1:
        for i in progress(range(total), desc=desc, total=total):
            yield i, func(*tasks[i])
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # safe with threaded parents (PyTorch, Jupyter) on every OS
    with child_threads(1):  # BLAS/OpenMP read it when a worker imports them, before any initializer
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=set_threads, initargs=(1,)
        )
        futures = [pool.submit(func, *task) for task in tasks]  # every worker is started by now
    with pool:
        for i in progress(range(total), desc=desc, total=total):
            yield i, futures[i].result()


def _check_workers(workers: Any) -> int:
    try:
        value = int(workers)
    except (TypeError, ValueError):
        raise ValueError(f"workers={workers!r} must be a whole number >= 1") from None
    if value < 1 or value != workers:
        raise ValueError(f"workers={workers!r} must be a whole number >= 1")
    return value


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

    workers = _check_workers(workers)
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(
                f"images must be an (N, H, W, 3) uint8 array or a list of (H, W, 3) arrays, got shape {images.shape}"
            )
        if len(images):
            _check_image(images[0], "images[0]")  # the stack shares shape and dtype: one check covers all
        image_list = list(images)
    else:
        image_list = [_check_image(img, f"images[{i}]") for i, img in enumerate(images)]
    n = len(image_list)
    if n == 0:
        raise ValueError("extract_concepts got no images (an empty dataset); pass at least one patch")
    mpps = [float(mpp)] * n if np.ndim(mpp) == 0 else [float(m) for m in mpp]  # type: ignore[arg-type]
    if len(mpps) != n:
        raise ValueError(f"got {len(mpps)} mpp values for {n} images; pass one value or one per image")
    for m in set(mpps):
        _check_mpp(m, params)
    chunk_size = max(1, int(chunk_size))
    tasks = [
        (image_list[i : i + chunk_size], mpps[i : i + chunk_size], params) for i in range(0, n, chunk_size)
    ]
    parts: list[dict[str, np.ndarray]] = [{}] * len(tasks)
    for i, result in _run_tasks(_concepts_of_images, tasks, workers, desc="nuclei concepts"):
        parts[i] = result
    return pd.DataFrame({name: np.concatenate([p[name] for p in parts]) for name in CONCEPT_COLUMNS})


def _cache_key(params: SegmentationParams, source: Path, tile_mpp: float, n_rows: int) -> dict[str, Any]:
    stat = source.stat()
    return {
        "version": CONCEPTS_VERSION,
        "params": asdict(params),
        "tile_mpp": float(tile_mpp),
        "n_rows": int(n_rows),
        "source_size": int(stat.st_size),
        "source_mtime_ns": int(stat.st_mtime_ns),
    }


def _read_index(folder: Path) -> pd.DataFrame:
    import pandas as pd

    index_path = folder / "index.csv"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"patch folder {folder} does not exist; create it with `mtlutils tile` (slides.tile_cohort)"
        )
    if not index_path.is_file():
        raise FileNotFoundError(
            f"patch folder {folder} has no index.csv; create it with `mtlutils tile` (slides.tile_cohort)"
        )
    index = pd.read_csv(index_path, dtype={"slide_id": str, "split": str, "file": str, "center": str})
    missing = [c for c in ("file", "row") if c not in index.columns]
    if missing:
        raise ValueError(
            f"{index_path} lacks column(s) {missing}; it was not written by slides.tile_cohort: tile again"
        )
    if len(index) == 0:
        raise ValueError(
            f"patch folder {folder} holds no patches (empty index.csv); tile with a lower tissue_threshold"
        )
    return index


def extract_patch_dir_concepts(
    patch_dir: str | os.PathLike,
    workers: int = 1,
    params: SegmentationParams = DEFAULT_PARAMS,
    fit_split: str = "train",
    chunk_size: int = 64,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Concepts of every patch of a dataset folder written by ``slides.tile_cohort``; cached, resumable.

    Per slide file ``F.h5`` the concepts go to ``patch_dir/concepts_cache/F.h5`` (atomically; reused
    while the slide file, the tile mpp and ``params`` are unchanged, so an interrupted run resumes).
    Then writes ``concepts.csv`` (one row per row of ``index.csv``, same order, with ``slide_id``,
    ``split``, ``file``, ``row`` for joining) and ``concept_scaler.json`` (a :class:`ConceptScaler`
    fitted on the rows whose split is ``fit_split`` only). Returns the concepts table.
    """
    import pandas as pd

    from mtlutils.core import io as mio

    workers = _check_workers(workers)
    folder = Path(patch_dir).expanduser()
    index = _read_index(folder)
    cache_dir = mio.ensure_writable_dir(folder / CACHE_DIR)
    files = list(dict.fromkeys(index["file"].astype(str)))
    todo: list[tuple[str, dict[str, Any]]] = []
    tile_mpps: dict[str, float] = {}
    for file in files:
        source = folder / file
        if not source.is_file():
            raise FileNotFoundError(
                f"patch file {source} listed in {folder / 'index.csv'} is missing; run tile_cohort again"
            )
        attrs = mio.read_h5_attrs(source)
        tile_mpp = attrs.get("tile_mpp")
        if tile_mpp is None:
            raise ValueError(f"{source} has no tile_mpp attribute; re-tile it with slides.tile_cohort")
        tile_mpps[file] = float(tile_mpp)
        _check_mpp(tile_mpp, params)
        key = _cache_key(params, source, float(tile_mpp), mio.h5_length(source, "images"))
        cached = cache_dir / Path(file).name
        if not overwrite and cached.is_file():
            try:
                if mio.read_h5_attrs(cached).get("cache_key") == key:
                    continue
            except OSError:
                pass  # unreadable cache: compute again
        todo.append((file, key))

    tasks: list[tuple[Any, ...]] = []
    owner: list[str] = []
    for file, key in todo:
        for start in range(0, key["n_rows"], chunk_size):
            tasks.append(
                (str(folder / file), start, min(start + chunk_size, key["n_rows"]), tile_mpps[file], params)
            )
            owner.append(file)
    pending = {file: [] for file, _ in todo}
    remaining = {file: owner.count(file) for file, _ in todo}
    keys = dict(todo)
    for file, key in todo:  # slides without patches still get an (empty) cache
        if key["n_rows"] == 0:
            mio.write_h5(cache_dir / Path(file).name, _rows_to_arrays([]), attrs={"cache_key": key})
    for i, result in _run_tasks(_concepts_of_h5_rows, tasks, workers, desc="nuclei concepts"):
        file = owner[i]
        pending[file].append((tasks[i][1], result))
        remaining[file] -= 1
        if remaining[file] == 0:  # slide complete: write its cache at once (resumable)
            parts = [r for _, r in sorted(pending.pop(file), key=lambda item: item[0])]
            arrays = {name: np.concatenate([p[name] for p in parts]) for name in CONCEPT_COLUMNS}
            mio.write_h5(cache_dir / Path(file).name, arrays, attrs={"cache_key": keys[file]})

    columns: dict[str, list[np.ndarray]] = {name: [] for name in CONCEPT_COLUMNS}
    order: list[np.ndarray] = []
    for file, group in index.groupby("file", sort=False):
        arrays, _ = mio.read_h5(cache_dir / Path(str(file)).name, keys=list(CONCEPT_COLUMNS))
        rows = group["row"].to_numpy(dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(arrays["n_nuclei"])):
            raise ValueError(
                f"index.csv refers to rows beyond {file}; run tile_cohort again to rebuild the index"
            )
        for name in CONCEPT_COLUMNS:
            columns[name].append(arrays[name][rows])
        order.append(group.index.to_numpy())
    position = np.concatenate(order)
    table = pd.DataFrame({name: np.concatenate(columns[name]) for name in CONCEPT_COLUMNS})
    table.index = position
    table = table.sort_index()
    keys_df = index[[c for c in ("slide_id", "center", "split", "file", "row") if c in index.columns]]
    table = pd.concat([keys_df.reset_index(drop=True), table.reset_index(drop=True)], axis=1)
    with mio.atomic_path(folder / CONCEPTS_FILE) as tmp:
        table.to_csv(tmp, index=False)
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
            stacklevel=2,
        )
    scaler.save(folder / SCALER_FILE)
    return table


def read_concepts(patch_dir: str | os.PathLike, standardise: bool = False) -> pd.DataFrame:
    """The concepts table of a patch folder (written by :func:`extract_patch_dir_concepts`).

    Rows align with ``index.csv``. ``standardise=True`` replaces each concept the stored
    :class:`ConceptScaler` knows by its z-score (fitted on the training split; NaN stays NaN).
    """
    import pandas as pd

    folder = Path(patch_dir).expanduser()
    path = folder / CONCEPTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `mtlutils concepts --patches {folder}` first")
    table = pd.read_csv(path, dtype={"slide_id": str, "center": str, "split": str, "file": str})
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


# --------------------------------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------------------------------


class ConceptScaler:
    """Z-scores of concepts, fitted on one split (NaN-aware) and applied unchanged to the others.

    ``z = (x − mean) / sd`` with the mean and the population SD (ddof 0) of the finite fitting values;
    NaN stays NaN (a missing target is masked, never replaced). Stored as JSON with
    :meth:`save` / :meth:`load` (or :meth:`to_dict` / :meth:`from_dict`).
    """

    def __init__(self, names: Sequence[str] | None = None):
        self.names: list[str] = list(CONCEPTS if names is None else names)
        if not self.names:
            raise ValueError("ConceptScaler needs at least one concept name")
        self.mean: dict[str, float] = {}
        self.scale: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.skipped: dict[str, str] = {}  #: concepts left out by fit(skip_unfit=True), with the reason
        self.fitted_on: str = ""

    @property
    def is_fitted(self) -> bool:
        return bool(self.mean)

    def _columns(self, frame: Any, what: str) -> None:
        missing = [name for name in self.names if name not in getattr(frame, "columns", [])]
        if missing:
            raise ValueError(
                f"ConceptScaler.{what}: the table lacks concept column(s) {missing}; pass a concepts table"
            )

    def fit(self, frame: pd.DataFrame, fitted_on: str = "", skip_unfit: bool = False) -> ConceptScaler:
        """Learn mean and SD of each concept from ``frame`` (the training rows only); return self.

        A concept with fewer than 2 finite values or no spread cannot be standardised: an error, or
        with ``skip_unfit=True`` it is left out of :attr:`names` and listed in :attr:`skipped` (reason).
        """
        self._columns(frame, "fit")
        mean, scale, n, skipped = {}, {}, {}, {}
        for name in self.names:
            values = np.asarray(frame[name], dtype=np.float64)
            values = values[np.isfinite(values)]
            problem = ""
            if values.size < 2:
                problem = f"{values.size} finite value(s) in the fitting rows"
            elif not float(values.std()) > 0:
                problem = f"it is constant ({values[0]:g}) on the fitting rows"
            if problem:
                if skip_unfit:
                    skipped[name] = problem
                    continue
                raise ValueError(
                    f"cannot standardise concept {name!r}: {problem}; fit on more patches or leave it out "
                    "with ConceptScaler(names=[...])"
                )
            mean[name], scale[name], n[name] = float(values.mean()), float(values.std()), int(values.size)
        if not mean:
            raise ValueError(f"cannot standardise any concept on these rows ({skipped}); fit on more patches")
        self.names = [name for name in self.names if name in mean]
        self.mean, self.scale, self.n, self.skipped = mean, scale, n, skipped
        self.fitted_on = str(fitted_on)
        return self

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("ConceptScaler is not fitted; call fit(train_table) or load(path) first")

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Z-scored copy of the concept columns of ``frame`` (same index; NaN stays NaN)."""
        import pandas as pd

        self._check_fitted()
        self._columns(frame, "transform")
        return pd.DataFrame(
            {
                name: (np.asarray(frame[name], dtype=np.float64) - self.mean[name]) / self.scale[name]
                for name in self.names
            },
            index=frame.index,
        )

    def fit_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.fit(frame).transform(frame)

    def inverse_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Concept values (original units) from z-scores."""
        import pandas as pd

        self._check_fitted()
        self._columns(frame, "inverse_transform")
        return pd.DataFrame(
            {
                name: np.asarray(frame[name], dtype=np.float64) * self.scale[name] + self.mean[name]
                for name in self.names
            },
            index=frame.index,
        )

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "names": list(self.names),
            "mean": dict(self.mean),
            "scale": dict(self.scale),
            "n": dict(self.n),
            "fitted_on": self.fitted_on,
            "skipped": dict(self.skipped),
            "units": {name: CONCEPTS[name].unit for name in self.names if name in CONCEPTS},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptScaler:
        try:
            scaler = cls(data["names"])
            scaler.mean = {k: float(data["mean"][k]) for k in scaler.names}
            scaler.scale = {k: float(data["scale"][k]) for k in scaler.names}
            scaler.n = {k: int(data.get("n", {}).get(k, 0)) for k in scaler.names}
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"not a ConceptScaler dictionary (missing {err}); write it with ConceptScaler.to_dict()"
            ) from None
        bad = [k for k in scaler.names if not (math.isfinite(scaler.mean[k]) and scaler.scale[k] > 0)]
        if bad:
            raise ValueError(f"ConceptScaler dictionary has invalid mean/scale for {bad}; fit it again")
        scaler.fitted_on = str(data.get("fitted_on", ""))
        scaler.skipped = {str(k): str(v) for k, v in dict(data.get("skipped", {})).items()}
        return scaler

    def save(self, path: str | os.PathLike) -> Path:
        from mtlutils.core.io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConceptScaler:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"concept scaler {path} does not exist; run `mtlutils concepts --patches DIR` first"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"concept scaler {path} is not valid JSON ({err.msg}); delete it and extract again"
            ) from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        state = f"fitted on {self.fitted_on or 'a table'}" if self.is_fitted else "not fitted"
        return f"ConceptScaler({self.names}, {state})"


# --------------------------------------------------------------------------------------------------
# Concept datasets and what the concepts are associated with
# --------------------------------------------------------------------------------------------------

CLASS_NAMES = {0.0: "normal", 1.0: "tumour"}


def patch_dir_mpp(patch_dir: str | os.PathLike) -> float:
    """The µm/px of the patches of a folder written by ``slides.tile_cohort`` (its ``tile_mpp``)."""
    from mtlutils.core import io as mio

    folder = Path(patch_dir).expanduser()
    index = _read_index(folder)
    values = set()
    for file in dict.fromkeys(index["file"].astype(str)):
        if not (folder / file).is_file():
            raise FileNotFoundError(f"patch file {folder / file} listed in index.csv is missing; tile again")
        value = mio.read_h5_attrs(folder / file).get("tile_mpp")
        if value is None:
            raise ValueError(f"{folder / file} has no tile_mpp attribute; re-tile it with slides.tile_cohort")
        values.add(float(value))
    if len(values) != 1:
        raise ValueError(
            f"the slide files of {folder} were tiled at different µm/px {sorted(values)}; tile again"
        )
    return values.pop()


def read_concept_dataset(patch_dir: str | os.PathLike, standardise: bool = False) -> pd.DataFrame:
    """Concepts of a patch folder joined with its ``index.csv`` (labels, coordinates, slide variables).

    One row per patch, in ``index.csv`` order. Added columns: the index's own (``label``,
    ``patient_id``, ``x_px``, ``y_px``, ``mpp``, ``tumour_fraction`` …; its thumbnail-based
    ``tissue_fraction`` is renamed ``tile_tissue_fraction``, the concepts' full-resolution one stays
    ``tissue_fraction``) and ``tissue`` = "tumour" / "normal" / "unknown" from ``label``.
    """
    import pandas as pd

    folder = Path(patch_dir).expanduser()
    table = read_concepts(folder, standardise=standardise)
    index = _read_index(folder)
    if (
        len(index) != len(table)
        or not (index["file"].astype(str).to_numpy() == table["file"].astype(str).to_numpy()).all()
        or not (index["row"].to_numpy() == table["row"].to_numpy()).all()
    ):
        raise ValueError(
            f"{folder / CONCEPTS_FILE} does not match {folder / 'index.csv'} (tiled again since?); "
            "extract the concepts again (extract_patch_dir_concepts)"
        )
    extra = index.drop(columns=[c for c in index.columns if c in table.columns and c != "tissue_fraction"])
    extra = extra.rename(columns={"tissue_fraction": "tile_tissue_fraction"})
    out = pd.concat([table.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    label = out["label"] if "label" in out.columns else pd.Series(np.nan, index=out.index)
    out["tissue"] = label.map(CLASS_NAMES).fillna("unknown")
    return out


def _concept_list(table: pd.DataFrame, concepts: Sequence[str] | None) -> list[str]:
    names = [c for c in CONCEPTS if c in table.columns] if concepts is None else list(concepts)
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks concept column(s) {missing}; available: {list(table.columns)}")
    if not names:
        raise ValueError("no concept column in the table; pass concepts=[...] or a concepts table")
    return names


def _require_column(table: pd.DataFrame, column: str, what: str) -> None:
    if column not in table.columns:
        raise ValueError(
            f"the table has no {what} column {column!r}; pass its name (columns: {list(table.columns)})"
        )


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive exceeds a random negative (ties count ½): Mann–Whitney AUC."""
    from scipy.stats import rankdata

    n1, n0 = len(positive), len(negative)
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(np.concatenate([positive, negative]))
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def concept_label_association(
    table: pd.DataFrame,
    concepts: Sequence[str] | None = None,
    label: str = "label",
    by: str | None = "center",
) -> pd.DataFrame:
    """How well each concept separates tumour (label 1) from normal (label 0) patches.

    One row per concept: ``n``; ``auc`` (pooled; > 0.5 when the concept is higher in tumour);
    ``separation`` = max(auc, 1 − auc); ``r_pb`` (point-biserial correlation with the label);
    ``p_value`` (two-sided Mann–Whitney U). With ``by`` (e.g. the center): ``auc_<group>`` for every
    group holding both classes and ``auc_within`` = their mean, the separation that a center's mix of
    tumour and normal patches cannot fake. Rows with a missing label or concept are left out.
    """
    import pandas as pd
    from scipy.stats import mannwhitneyu

    names = _concept_list(table, concepts)
    _require_column(table, label, "label")
    if by is not None:
        _require_column(table, by, "group")
    y_all = pd.to_numeric(table[label], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isin(y_all[np.isfinite(y_all)], (0.0, 1.0)).all():
        raise ValueError(f"column {label!r} must hold 0/1 labels (NaN for unlabelled patches)")
    rows = {}
    for name in names:
        x_all = np.asarray(table[name], dtype=np.float64)
        ok = np.isfinite(x_all) & np.isfinite(y_all)
        x, y = x_all[ok], y_all[ok]
        pos, neg = x[y == 1], x[y == 0]
        row: dict[str, float] = {"n": int(ok.sum()), "auc": _auc(pos, neg)}
        row["separation"] = max(row["auc"], 1 - row["auc"]) if math.isfinite(row["auc"]) else math.nan
        varies = len(pos) and len(neg) and float(np.std(x)) > 0
        row["r_pb"] = float(np.corrcoef(x, y)[0, 1]) if varies else math.nan
        row["p_value"] = float(mannwhitneyu(pos, neg).pvalue) if varies else math.nan
        if by is not None:
            groups = table[by].to_numpy()[ok]
            within = []
            for group in pd.unique(groups):
                inside = groups == group
                value = _auc(x[inside & (y == 1)], x[inside & (y == 0)])
                row[f"auc_{group}"] = value
                if math.isfinite(value):
                    within.append(value)
            row["auc_within"] = float(np.mean(within)) if within else math.nan
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "concept"
    return out


def _center_statistics(x: np.ndarray, groups: np.ndarray) -> tuple[float, float, float, int, int] | None:
    """(SS between, SS total, Kruskal–Wallis H, df, n) of one stratum; None with < 2 groups or no spread."""
    import pandas as pd
    from scipy.stats import kruskal

    present = pd.unique(groups)
    if len(present) < 2 or len(x) < 3 or not float(np.ptp(x)) > 0:
        return None
    mean = x.mean()
    ss_total = float(((x - mean) ** 2).sum())
    ss_between = float(sum((groups == g).sum() * (x[groups == g].mean() - mean) ** 2 for g in present))
    h = float(kruskal(*[x[groups == g] for g in present]).statistic)
    return ss_between, ss_total, h, len(present) - 1, len(x)


def concept_center_association(
    table: pd.DataFrame,
    concepts: Sequence[str] | None = None,
    group: str = "center",
    within: str | None = None,
) -> pd.DataFrame:
    """How much each concept tracks the acquisition center (or any other grouping).

    One row per concept: ``n``; ``eta2`` = SS_between / SS_total of a one-way ANOVA (share of the
    variance explained by the center, 0–1); Kruskal–Wallis ``kw_h``, ``kw_df``, ``p_value`` and its
    rank effect size ``epsilon2`` = H / (n − 1) (0–1, robust to outliers). With ``within`` (e.g. the
    label) every statistic is computed inside each stratum and pooled: eta² = Σ SS_between / Σ
    SS_total, H and df summed (independent strata: H ~ χ²(Σ df)), ε² averaged weighted by n. So a
    center with more tumour does not look different just because tumour differs from normal.
    """
    import pandas as pd
    from scipy.stats import chi2

    names = _concept_list(table, concepts)
    _require_column(table, group, "group")
    if within is not None:
        _require_column(table, within, "stratum")
    strata = np.zeros(len(table)) if within is None else table[within].to_numpy()
    groups_all = table[group].to_numpy()
    rows = {}
    for name in names:
        x_all = np.asarray(table[name], dtype=np.float64)
        ok = np.isfinite(x_all) & pd.notna(groups_all) & pd.notna(strata)
        parts = []
        for stratum in pd.unique(strata[ok]):
            inside = ok & (strata == stratum)
            stats = _center_statistics(x_all[inside], groups_all[inside])
            if stats is not None:
                parts.append(stats)
        row: dict[str, float] = {"n": int(ok.sum())}
        if parts:
            ss_b, ss_t, h, df, n = (np.array(v, dtype=np.float64) for v in zip(*parts, strict=True))
            row.update(
                eta2=float(ss_b.sum() / ss_t.sum()),
                kw_h=float(h.sum()),
                kw_df=int(df.sum()),
                p_value=float(chi2.sf(h.sum(), df.sum())),
                epsilon2=float((n * h / (n - 1)).sum() / n.sum()),
            )
        else:
            row.update(eta2=math.nan, kw_h=math.nan, kw_df=0, p_value=math.nan, epsilon2=math.nan)
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "concept"
    return out


def ground_truth_agreement(
    measured: pd.DataFrame,
    truth: pd.DataFrame,
    pairs: Mapping[str, str] | None = None,
    by: str | None = "center",
) -> pd.DataFrame:
    """Spearman correlation between measured concepts and the generator's ground truth.

    ``measured`` and ``truth`` are row-aligned (same length; e.g. ``read_concept_dataset`` and
    ``synthetic.patch_dir_ground_truth`` on the same folder). ``pairs``: measured column → truth column
    (default: count, area, area_cv to the same names). Returns one row per (concept, group) with
    ``n``, ``spearman`` and ``median_ratio`` (median of measured / true: a bias of the measurement),
    group ``"all"`` pooling every row, then one per value of ``by``. Rows missing either value are
    left out.
    """
    import pandas as pd
    from scipy.stats import spearmanr

    if len(measured) != len(truth):
        raise ValueError(
            f"measured ({len(measured)} rows) and truth ({len(truth)} rows) must be row-aligned; "
            "select the same patches in both"
        )
    pairs = dict(pairs or {"count": "count", "area": "area", "area_cv": "area_cv"})
    for m_col, t_col in pairs.items():
        _require_column(measured, m_col, "measured")
        _require_column(truth, t_col, "ground-truth")
    groups = None
    if by is not None:
        _require_column(measured, by, "group")
        groups = measured[by].to_numpy()
    rows = []
    for m_col, t_col in pairs.items():
        m_all = np.asarray(measured[m_col], dtype=np.float64)
        t_all = np.asarray(truth[t_col], dtype=np.float64)
        ok = np.isfinite(m_all) & np.isfinite(t_all)
        selections = [("all", ok)]
        if groups is not None:
            selections += [(g, ok & (groups == g)) for g in pd.unique(groups)]
        for name, sel in selections:
            m, t = m_all[sel], t_all[sel]
            enough = len(m) >= 3 and np.ptp(m) > 0 and np.ptp(t) > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.median(m[t != 0] / t[t != 0])) if (t != 0).any() else math.nan
            rows.append(
                {
                    "concept": m_col,
                    "truth": t_col,
                    "group": str(name),
                    "n": int(sel.sum()),
                    "spearman": float(spearmanr(m, t).statistic) if enough else math.nan,
                    "median_ratio": ratio,
                }
            )
    return pd.DataFrame(rows)


def normalisation_effect(
    tables: Mapping[str, pd.DataFrame],
    concepts: Sequence[str] | None = None,
    reference: str = "none",
    group: str = "center",
    within: str | None = "label",
) -> pd.DataFrame:
    """What stain normalisation does to the concepts of the same patches.

    ``tables``: method name → concepts table of the same patches in the same order (``reference``
    being the unnormalised one), each with the ``group`` (and ``within``) columns. One row per
    (method, concept): ``spearman`` with the reference values (1 = ranking unchanged),
    ``median_change`` (median of value / reference value − 1), and the center association
    (:func:`concept_center_association` ``eta2`` and ``epsilon2``, stratified by ``within``).
    """
    import pandas as pd
    from scipy.stats import spearmanr

    if reference not in tables:
        raise ValueError(f"reference={reference!r} is not one of the methods {list(tables)}")
    base = tables[reference]
    names = _concept_list(base, concepts)
    rows = []
    for method, table in tables.items():
        if len(table) != len(base):
            raise ValueError(
                f"tables[{method!r}] has {len(table)} rows, the reference {len(base)}: pass the same patches"
            )
        association = concept_center_association(table, names, group=group, within=within)
        for name in names:
            a = np.asarray(base[name], dtype=np.float64)
            b = np.asarray(table[name], dtype=np.float64)
            ok = np.isfinite(a) & np.isfinite(b)
            enough = ok.sum() >= 3 and np.ptp(a[ok]) > 0 and np.ptp(b[ok]) > 0
            nonzero = ok & (a != 0)
            rows.append(
                {
                    "method": method,
                    "concept": name,
                    "spearman": float(spearmanr(a[ok], b[ok]).statistic) if enough else math.nan,
                    "median_change": float(np.median(b[nonzero] / a[nonzero] - 1))
                    if nonzero.any()
                    else math.nan,
                    "eta2": association.loc[name, "eta2"],
                    "epsilon2": association.loc[name, "epsilon2"],
                }
            )
    return pd.DataFrame(rows)
