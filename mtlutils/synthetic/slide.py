"""One slide or one patch: argument checks, the slide's hidden variables, and the two render entry points."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.data.units import check_mpp
from mtlutils.synthetic.annotate import _coarse_outlines, _small_foci
from mtlutils.synthetic.centers import CenterStyle, _jitter_stain, get_center
from mtlutils.synthetic.fields import _streams
from mtlutils.synthetic.model import tumour_area_fraction
from mtlutils.synthetic.render import _render
from mtlutils.synthetic.settings import DEFAULT_SETTINGS, GeneratorSettings
from mtlutils.synthetic.tissue import _place_tumours, _region_map, _tissue_mask, _TumourRegion

MIN_SLIDE_PX = 512  # room for tissue, tumour regions and >= 2 pyramid levels of 256-px tiles
MIN_PATCH_PX = 32
MPP_RANGE = (0.2, 2.0)
MPP_FIX = "use e.g. 0.5 (a 20x scan)"


@dataclass
class SyntheticSlide:
    """One rendered slide and its ground truth.

    ``rgb``: (H, W, 3) uint8 level 0. ``polygons``: tumour outlines, each (K, 2) x, y in level-0 px.
    ``nuclei``: columns x_px, y_px, area_um2, type, intensity. ``grades``: one per tumour region.
    ``tumour_fraction``: fraction of the tissue inside tumour polygons. ``stain_od`` and
    ``stain_strength``: this slide's own (jittered) stain. ``polygons`` are the exact regions
    (unannotated foci included); ``annotation_polygons`` what the annotation XML gets.
    """

    slide_id: str
    center: str
    rgb: np.ndarray
    polygons: list[np.ndarray]
    nuclei: pd.DataFrame
    mpp: float
    has_tumour: bool
    biomarker: int
    tme_score: float
    grades: list[float]
    tumour_fraction: float
    tissue_fraction: float
    stain_od: np.ndarray
    stain_strength: float
    annotation_polygons: list[np.ndarray] | None = None  # the XML's (coarse) outlines; None: ``polygons``


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Run the small matrix products of the random fields on one BLAS thread.

    They gain nothing from more, and several BLAS threads per process oversubscribe a laptop
    (seen here: 2x slower under load).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} must be in [0, 1]")
    return value


def _check_int(name: str, value: Any, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}; {fix}")
    return int(value)


def _slide_hidden(
    style: CenterStyle, index: int, seed: int, settings: GeneratorSettings | None = None
) -> tuple[dict[str, np.random.Generator], dict[str, Any]]:
    """The slide's generators and its hidden variables: stain jitter, tumour grades and target area,
    extra focus blur (µm) and the number of unannotated tumour foci."""
    settings = DEFAULT_SETTINGS if settings is None else settings
    rngs = _streams(seed, style.name, index, kind=1)
    hidden = rngs["hidden"]
    stain_od, strength = _jitter_stain(hidden, style)
    n_regions = int(hidden.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    lo, hi = settings.grade_range
    grades = lo + (hi - lo) * hidden.uniform(0.0, 1.0, 3)[:n_regions]
    jitter = hidden.uniform(-0.08, 0.08)
    fraction = float(np.clip(tumour_area_fraction(style.tumour_prevalence) + jitter, 0.08, 0.7))
    extra = _streams(seed, style.name, index, kind=3)["extra"]  # kept apart from the slide's own streams
    focus = float(extra.uniform(0.0, settings.focus_blur_um)) if settings.focus_blur_um > 0 else 0.0
    n_foci = int(extra.poisson(settings.unannotated_foci)) if settings.unannotated_foci > 0 else 0
    return rngs, {
        "stain_od": stain_od,
        "stain_strength": strength,
        "grades": [float(g) for g in grades],
        "target_tumour_fraction": fraction,
        "focus_blur_um": focus,
        "unannotated_foci": n_foci,
        "foci_grades": [float(g) for g in lo + (hi - lo) * extra.uniform(0.0, 1.0, n_foci)],
    }


def generate_slide(
    index: int,
    center: CenterStyle,
    has_tumour: bool,
    biomarker: int,
    tme_score: float,
    size_px: int,
    mpp: float,
    seed: int,
    settings: GeneratorSettings | None = None,
) -> SyntheticSlide:
    """Render slide ``index`` of ``center`` (deterministic in seed, center name, index and settings).

    ``tme_score`` in [0, 1] sets the lymphocyte density; ``biomarker`` is only stored (it acts through
    the TME score). ``size_px``: side of the square level-0 image (>= 512); ``mpp``: µm per pixel.
    ``settings``: the difficulty options (:class:`GeneratorSettings`, default :data:`DEFAULT_SETTINGS`).
    """
    settings = DEFAULT_SETTINGS if settings is None else settings
    center = get_center(center, settings=settings)
    index = _check_int("index", index, 0, "slides are numbered from 0")
    size_px = _check_int(
        "size_px", size_px, MIN_SLIDE_PX, f"a slide needs at least {MIN_SLIDE_PX} px (default 2048)"
    )
    mpp = check_mpp(mpp, *MPP_RANGE, fix=MPP_FIX)
    tme_score = _check_unit("tme_score", tme_score)
    shape = (size_px, size_px)
    rngs, hidden = _slide_hidden(center, index, int(seed), settings)
    with _one_blas_thread():
        tissue = _tissue_mask(rngs["layout"], shape)
    regions: list[_TumourRegion] = []
    region_map = np.zeros(shape, np.uint8)
    annotated: list[np.ndarray] = []
    if has_tumour:
        regions = _place_tumours(rngs["tumour"], tissue, hidden["target_tumour_fraction"], hidden["grades"])
        annotated = _coarse_outlines(rngs["extra"], [r.polygon for r in regions], settings, mpp, shape)
        regions += _small_foci(rngs["extra"], tissue, regions, hidden["foci_grades"], mpp)
        region_map = _region_map(regions, shape)
        tissue = tissue | (region_map > 0)
    with _one_blas_thread():
        rgb, table = _render(
            shape,
            mpp,
            center,
            hidden["stain_od"],
            hidden["stain_strength"],
            tissue,
            regions,
            region_map,
            tme_score,
            rngs,
            settings,
            hidden["focus_blur_um"],
        )
    n_tissue = int(tissue.sum())
    return SyntheticSlide(
        slide_id=f"{center.name}-{index:03d}",
        center=center.name,
        rgb=rgb,
        polygons=[r.polygon for r in regions],
        nuclei=table,
        mpp=mpp,
        has_tumour=bool(has_tumour),
        biomarker=int(biomarker),
        tme_score=float(tme_score),
        grades=[r.grade for r in regions],
        tumour_fraction=float((region_map > 0).sum() / max(n_tissue, 1)),
        tissue_fraction=n_tissue / float(size_px * size_px),
        stain_od=hidden["stain_od"],
        stain_strength=hidden["stain_strength"],
        annotation_polygons=annotated,
    )


def render_patch(
    center: str | CenterStyle = "A",
    tumour: bool = False,
    size_px: int = 224,
    mpp: float = 0.5,
    seed: int = 0,
    tme_score: float = 0.3,
    grade: float | None = None,
    settings: GeneratorSettings | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """One (size_px, size_px, 3) uint8 patch fully covered by tissue, and its nuclei table.

    ``tumour=True``: the whole patch lies inside a tumour region of ``grade`` (None: drawn from
    U(0, 1)); else normal tissue (stroma, maybe part of a gland or lobule). The table has x_px, y_px
    (patch px, a pixel's centre at +0.5), area_um2, type, intensity. Deterministic in all arguments;
    the tissue depends on the seed (not on the center), so one seed shows the same tissue under each
    center's stain.
    """
    style = get_center(center, settings=settings)
    size_px = _check_int(
        "size_px", size_px, MIN_PATCH_PX, f"a patch needs at least {MIN_PATCH_PX} px (e.g. 224)"
    )
    mpp = check_mpp(mpp, *MPP_RANGE, fix=MPP_FIX)
    tme_score = _check_unit("tme_score", tme_score)
    g = None if grade is None else _check_unit("grade", grade)
    rngs = _streams(int(seed), "", 0, kind=2)  # the tissue depends on the seed only ...
    stain_od, strength = _jitter_stain(
        _streams(int(seed), style.name, 0, kind=2)["hidden"], style
    )  # ... the stain on the center
    drawn_grade = float(rngs["hidden"].uniform(0.0, 1.0))
    shape = (size_px, size_px)
    tissue = np.ones(shape, bool)
    regions: list[_TumourRegion] = []
    region_map = np.zeros(shape, np.uint8)
    if tumour:
        box = np.array([[0, 0], [size_px, 0], [size_px, size_px], [0, size_px]], float)
        regions = [_TumourRegion(box, drawn_grade if g is None else g)]
        region_map[:] = 1
    with _one_blas_thread():
        return _render(
            shape, mpp, style, stain_od, strength, tissue, regions, region_map, tme_score, rngs, settings
        )
