"""Settings of the nuclei segmentation and the checks of its inputs (image, µm per pixel)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from mtlutils.data.units import check_mpp as _check_mpp_range

MIN_MPP = 0.05  #: µm/px; finer "resolutions" are a unit mistake (mm or nm instead of µm)
MIN_SIDE_PX = 32  #: smallest patch side accepted (GLCM and segmentation need room)


@dataclass(frozen=True)
class SegmentationParams:
    """Settings of :func:`segment_nuclei`; lengths in µm, areas in µm², optical densities in OD units.

    The defaults were checked by eye on real H&E (skin, 0.5 and 0.25 µm/px), then calibrated on the
    calibration part of annotated real 40x nuclei (:mod:`mtlutils.concepts.realdata`, ``bench/real_nuclei.py``:
    contrast floor, smallest nucleus, opening, marker spacing, neck depth, colour tests); they are not
    tuned to the synthetic cohort. Thresholds are relative to each patch's own hematoxylin statistics, so they follow
    a change of stain; only the tissue test and ``min_contrast_od`` are absolute optical densities, in
    the units of :func:`mtlutils.data.stain.optical_density` (natural log, white level 240). They were
    tuned with OD = log10(256 / (I + 1)) and converted: ln 10 × the old value (0.15 → 0.152 for the
    sum over RGB also takes off 3 × ln(256/240), the change of white level).
    """

    smooth_um: float = 0.5  #: Gaussian smoothing of the H channel before thresholding
    tissue_od: float = 0.152  #: summed RGB optical density above which a (smoothed) pixel is tissue ...
    tissue_chroma_od: float = 0.115  #: ... if its OD chroma (max − min over RGB) also exceeds this
    tissue_smooth_um: float = 2.0  #: smoothing of the optical density for the tissue mask
    min_tissue_fraction: float = 0.05  #: below this the patch is flagged ``no_tissue``
    min_contrast_od: float = 0.07  #: span = Otsu − mean H of the pale class; below this: no nuclei
    pale_level: float = 0.35  #: pale nuclei: H above (pale class mean) + pale_level × span ...
    pale_local: float = 0.25  #: ... and above the local mean H by pale_local × span
    local_window_um: float = 20.0  #: side of the box that defines the local mean H
    hole_area_um2: float = 20.0  #: holes inside a nucleus smaller than this are filled
    open_radius_um: float = 0.75  #: opening radius: removes threads thinner than ~2 radii
    min_area_um2: float = 5.0  #: objects and watershed fragments smaller than this are dropped
    core_levels: int = 2  #: darker cores whose distance maps are added to the mask's (see segment.py)
    core_step: float = 0.5  #: core k is H > Otsu + k × core_step × span
    peak_distance_um: float = 1.0  #: minimum distance between two nucleus centres (markers)
    split_depth_um: float = 0.05  #: markers stay apart if the neck between them is this deep (summed map)
    min_h_share: float = 0.45  #: nuclei need mean H / (H + E) OD >= this: red cells and eosin are not nuclei
    min_chroma_ratio: float = 0.1  #: ... and OD chroma / OD (of their mean OD) >= this: black pigment is grey
    edge_level: float = 0.45  #: nucleus edge: this fraction of the way from background H to its peak
    max_mpp: float = 0.6  #: coarser images are refused (nuclei would be a few pixels across)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SegmentationParams.{f.name}={value!r} must be a finite number >= 0")


DEFAULT_PARAMS = SegmentationParams()


def check_image(image: Any, name: str = "image") -> np.ndarray:
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


def check_mpp(mpp: Any, params: SegmentationParams, what: str = "mpp") -> float:
    """``mpp`` in µm/px within [:data:`MIN_MPP`, ``params.max_mpp``], or a ValueError naming it and the fix."""
    value = _check_mpp_range(
        mpp, 0.0, math.inf, what, "pass micrometres per pixel, e.g. 0.25 at 40x, 0.5 at 20x"
    )
    if value > params.max_mpp:
        fix = (
            "too coarse for nuclei (a nucleus would be a few px across): read the patches at "
            f"<= 0.5 µm/px (max accepted {params.max_mpp:g})"
        )
    else:
        fix = "implausibly fine: pass micrometres per pixel, not mm or nm"
    return _check_mpp_range(value, MIN_MPP, params.max_mpp, what, fix)
