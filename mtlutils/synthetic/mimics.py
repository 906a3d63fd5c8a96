"""Benign tumour mimics: lymphoid follicles, sinus histiocyte clusters and crushed (smeared) streaks."""

from __future__ import annotations

import math

import numpy as np

from mtlutils.synthetic.fields import _hex_points, _lookup
from mtlutils.synthetic.nuclei import _Nuclei

#: mimic kinds and their share of the foci
MIMIC_KINDS = ("follicle", "histiocytes", "crush")
MIMIC_SHARES = (0.4, 0.35, 0.25)

_BASE = dict(coarse=0.0, rim=0.0, nucleolus=0.0)
#: nuclei of the mimics (areas µm², relative hematoxylin load, densities per mm² of the focus)
MIMIC_NUCLEI: dict[str, dict[str, float]] = {
    # mantle zone: small dark lymphocytes, packed
    "mantle": dict(
        _BASE,
        area=24.0,
        cv=0.12,
        ratio_lo=1.0,
        ratio_hi=1.15,
        intensity=1.4,
        intensity_sd=0.08,
        texture=0.05,
        irregular=0.02,
        density=9000.0,
    ),
    # germinal centre: large pale vesicular centroblasts with nucleoli (tumour-like)
    "germinal": dict(
        area=60.0,
        cv=0.28,
        ratio_lo=1.0,
        ratio_hi=1.35,
        intensity=0.95,
        intensity_sd=0.12,
        texture=0.2,
        coarse=0.4,
        rim=0.25,
        nucleolus=0.35,
        irregular=0.07,
        density=4200.0,
    ),
    # sinus histiocytes: large pale kidney-shaped nuclei in abundant pink cytoplasm
    "histiocyte": dict(
        area=55.0,
        cv=0.24,
        ratio_lo=1.2,
        ratio_hi=1.8,
        intensity=0.9,
        intensity_sd=0.1,
        texture=0.15,
        coarse=0.2,
        rim=0.1,
        nucleolus=0.15,
        irregular=0.12,
        density=2600.0,
    ),
    # crush artefact: smeared, elongated, dark nuclei along a streak
    "crushed": dict(
        _BASE,
        area=45.0,
        cv=0.45,
        ratio_lo=3.0,
        ratio_hi=6.0,
        intensity=1.5,
        intensity_sd=0.15,
        texture=0.05,
        irregular=0.15,
        density=6500.0,
    ),
}
#: background (eosin, hematoxylin) of each mimic compartment
MIMIC_BACKGROUND = {"follicle": (0.22, 0.07), "histiocytes": (0.45, 0.09), "crush": (0.30, 0.28)}


def _add_in(
    rng: np.random.Generator,
    nuclei: _Nuclei,
    kind: str,
    mask: np.ndarray,
    box: tuple[slice, slice],
    mpp: float,
    angle: float | None = None,
) -> None:
    """Nuclei of ``kind`` on a jittered lattice inside ``mask`` (the window ``box`` of the slide)."""
    params = MIMIC_NUCLEI[kind]
    y, x = _hex_points(rng, mask.shape, params["density"] * 1e-6 * mpp**2, jitter=0.35)
    sel = _lookup(mask, y, x)
    n = int(sel.sum())
    angles = None if angle is None else angle + rng.normal(0.0, 0.2, n)
    nuclei.add(rng, kind, y[sel] + box[0].start, x[sel] + box[1].start, params, angle=angles)


def _draw_mimics(
    rng: np.random.Generator,
    shape: tuple[int, int],
    mpp: float,
    allowed: np.ndarray,
    per_mm2: float,
    nuclei: _Nuclei,
) -> dict[str, np.ndarray]:
    """Mimic foci where ``allowed`` (normal tissue): Poisson(``per_mm2`` × allowed mm²) of them.

    Adds their nuclei (types mantle, germinal, histiocyte, crushed) to ``nuclei``; returns one boolean
    mask per mimic kind (:data:`MIMIC_KINDS`).
    """
    h, w = shape
    um = 1.0 / mpp
    masks = {k: np.zeros(shape, bool) for k in MIMIC_KINDS}
    area_mm2 = float(allowed.sum()) * mpp**2 * 1e-6
    n = int(rng.poisson(per_mm2 * area_mm2)) if per_mm2 > 0 else 0
    if n == 0:
        return masks
    cand = rng.uniform(0, 1, (8 * n, 2)) * np.array([h, w])
    ok = _lookup(allowed, cand[:, 0], cand[:, 1])
    centres = cand[ok][:n]
    kinds = rng.choice(len(MIMIC_KINDS), size=len(centres), p=MIMIC_SHARES)
    for (cy, cx), k in zip(centres, kinds, strict=True):
        kind = MIMIC_KINDS[k]
        if kind == "follicle":
            radius, length, theta = rng.uniform(70.0, 140.0) * um, 0.0, 0.0
        elif kind == "histiocytes":
            radius, length, theta = rng.uniform(35.0, 80.0) * um, 0.0, 0.0
        else:
            radius, length, theta = (
                rng.uniform(8.0, 15.0) * um,
                rng.uniform(150.0, 350.0) * um,
                rng.uniform(0, np.pi),
            )
        reach = int(math.ceil(radius + length / 2)) + 2
        y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, h)
        x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, w)
        box = (slice(y0, y1), slice(x0, x1))
        py = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - cy)
        px = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - cx)
        if kind == "crush":  # a capsule along theta
            t = np.clip(px * math.cos(theta) + py * math.sin(theta), -length / 2, length / 2)
            dist = np.hypot(px - t * math.cos(theta), py - t * math.sin(theta))
        else:
            wobble = 1.0 + 0.12 * np.cos(3 * np.arctan2(py, px) + rng.uniform(0, 2 * np.pi))
            dist = np.hypot(px, py) / wobble
        inside = (dist < radius) & allowed[box]
        masks[kind][box] |= inside
        if kind == "follicle":
            centre = inside & (dist < 0.6 * radius)
            _add_in(rng, nuclei, "germinal", centre, box, mpp)
            _add_in(rng, nuclei, "mantle", inside & ~centre, box, mpp)
        elif kind == "histiocytes":
            _add_in(rng, nuclei, "histiocyte", inside, box, mpp)
        else:
            _add_in(rng, nuclei, "crushed", inside, box, mpp, angle=theta)
    return masks
