"""One check of a resolution in µm per pixel, shared by slide reading, the generator and the segmentation."""

from __future__ import annotations

import math
from typing import Any

PLAUSIBLE_MPP = (0.05, 100.0)  #: µm/px any slide or patch may have (0.25 at 40x, 0.5 at 20x)


def check_mpp(
    mpp: Any,
    lo: float = PLAUSIBLE_MPP[0],
    hi: float = PLAUSIBLE_MPP[1],
    what: str = "mpp",
    fix: str = "pass micrometres per pixel, e.g. 0.25 at 40x or 0.5 at 20x",
) -> float:
    """``mpp`` as a float in µm/px within [lo, hi], or a one-line ValueError naming the value and ``fix``."""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={mpp!r} is not a number of µm per pixel; {fix}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what}={mpp!r} must be a positive, finite number of µm per pixel; {fix}")
    if not lo <= value <= hi:
        raise ValueError(f"{what}={value!r} µm/px is outside {lo:g}–{hi:g} µm/px; {fix}")
    return value


def is_plausible_mpp(mpp: float | None) -> bool:
    """True for a finite value within :data:`PLAUSIBLE_MPP` (metadata outside it is ignored, not trusted)."""
    return mpp is not None and math.isfinite(mpp) and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]
