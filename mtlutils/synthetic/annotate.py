"""Coarse annotations: loosely drawn tumour outlines, and small tumour foci the annotator missed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtlutils.synthetic.fields import _lookup
from mtlutils.synthetic.settings import GeneratorSettings
from mtlutils.synthetic.tissue import _star_polygon, _TumourRegion

FOCUS_RADIUS_UM = (35.0, 75.0)  # unannotated foci: mean radius range, µm


def _coarse_outlines(
    rng: np.random.Generator,
    polygons: Sequence[np.ndarray],
    settings: GeneratorSettings,
    mpp: float,
    shape: tuple[int, int],
) -> list[np.ndarray]:
    """The outlines an annotator would draw: each exact polygon pushed out radially by
    ``annotation_dilate_um`` (± 40 %, smoothly varying) and cut to ``annotation_vertices`` vertices
    (0: exact outlines, returned unchanged)."""
    if settings.annotation_dilate_um <= 0 and settings.annotation_vertices <= 0:
        return [np.asarray(p, float) for p in polygons]
    h, w = shape
    out = []
    for poly in polygons:
        poly = np.asarray(poly, float)
        centre = poly.mean(axis=0)
        rel = poly - centre
        r = np.hypot(rel[:, 0], rel[:, 1])
        theta = np.arctan2(rel[:, 1], rel[:, 0])
        wobble = 1.0 + 0.4 * np.sin(2 * theta + rng.uniform(0, 2 * np.pi))
        grow = settings.annotation_dilate_um / mpp * wobble
        loose = centre + rel * ((r + grow) / np.maximum(r, 1e-6))[:, None]
        if 3 <= settings.annotation_vertices < len(loose):
            start = int(rng.integers(len(loose)))
            keep = (start + np.linspace(0, len(loose), settings.annotation_vertices, endpoint=False)).astype(
                int
            )
            loose = loose[keep % len(loose)]
        loose[:, 0] = np.clip(loose[:, 0], 0.0, float(w))
        loose[:, 1] = np.clip(loose[:, 1], 0.0, float(h))
        out.append(loose)
    return out


def _small_foci(
    rng: np.random.Generator,
    tissue: np.ndarray,
    regions: Sequence[_TumourRegion],
    grades: Sequence[float],
    mpp: float,
) -> list[_TumourRegion]:
    """One small tumour region (mean radius :data:`FOCUS_RADIUS_UM`) per grade, in tissue and away
    from the annotated regions (their centres at least 1.5 radii beyond each region's reach)."""
    h, w = tissue.shape
    foci: list[_TumourRegion] = []
    reach = [
        (r.polygon.mean(axis=0), float(np.hypot(*(r.polygon - r.polygon.mean(axis=0)).T).max()))
        for r in regions
    ]
    for grade in grades:
        radius = rng.uniform(*FOCUS_RADIUS_UM) / mpp
        cand = rng.uniform(0, 1, (64, 2)) * np.array([w, h])
        ok = _lookup(tissue, cand[:, 1], cand[:, 0])
        for centre, far in reach:
            ok &= np.hypot(*(cand - centre).T) > far + 1.5 * radius
        if not ok.any():
            continue
        cx, cy = cand[np.argmax(ok)]
        poly = _star_polygon(rng, float(cx), float(cy), radius, n_vertices=48)
        poly[:, 0] = np.clip(poly[:, 0], 0.0, float(w))
        poly[:, 1] = np.clip(poly[:, 1], 0.0, float(h))
        foci.append(_TumourRegion(poly, float(grade)))
    return foci
