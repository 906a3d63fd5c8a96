"""Tissue layout: the tissue outline, tumour regions and their map, and the normal glands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mtlutils.data.annotations import rasterize_polygons
from mtlutils.synthetic.fields import _hex_density, _hex_points, _lookup, _smooth_field
from mtlutils.synthetic.model import (
    ACINUS_SPACING_UM,
    GLAND_NUCLEUS_SPACING_UM,
    GLAND_SPACING_UM,
    LOBULE_SPACING_UM,
    normal_nucleus_params,
)
from mtlutils.synthetic.nuclei import _Nuclei
from mtlutils.synthetic.settings import DEFAULT_SETTINGS, GeneratorSettings


@dataclass
class _TumourRegion:
    polygon: np.ndarray  # (K, 2) x, y continuous px
    grade: float


def _tissue_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Irregular tissue outline covering roughly 30–70 % of the slide."""
    h, w = shape
    s = min(h, w)
    cy, cx = h / 2 + rng.uniform(-0.06, 0.06) * h, w / 2 + rng.uniform(-0.06, 0.06) * w
    ry, rx = rng.uniform(0.40, 0.50) * h, rng.uniform(0.40, 0.50) * w
    t = rng.uniform(0, np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5 - np.float32(cy)
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5 - np.float32(cx)
    u = (xx * math.cos(t) + yy * math.sin(t)) / rx
    v = (-xx * math.sin(t) + yy * math.cos(t)) / ry
    f = (
        1.0
        - (u * u + v * v)
        + 0.35 * _smooth_field(rng, shape, 0.2 * s)
        + 0.08 * _smooth_field(rng, shape, 0.04 * s)
    )
    threshold = min(0.12, float(np.quantile(f[::8, ::8], 0.7)))  # at least ~30 % tissue
    return f > threshold


def _star_polygon(
    rng: np.random.Generator, cx: float, cy: float, radius: float, n_vertices: int = 120
) -> np.ndarray:
    """Irregular star-shaped outline ((K, 2) x, y) of mean radius ``radius`` px."""
    theta = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    r = np.ones_like(theta)
    for m in range(2, 9):
        r += rng.normal(0, 0.22 / m) * np.cos(m * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.45, None)
    return np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)


def _place_tumours(
    rng: np.random.Generator, tissue: np.ndarray, fraction: float, grades: Sequence[float]
) -> list[_TumourRegion]:
    """Tumour regions of total area ≈ ``fraction`` of the tissue, centred well inside it."""
    h, w = tissue.shape
    shares = rng.dirichlet(np.full(len(grades), 3.0))
    area = float(tissue.sum()) * fraction
    step = 8
    depth = ndimage.distance_transform_edt(tissue[::step, ::step]) * step
    regions: list[_TumourRegion] = []
    placed: list[tuple[float, float, float]] = []
    for share, grade in zip(shares, grades, strict=True):
        radius = math.sqrt(area * share / math.pi) * 1.05
        cand = np.argwhere(depth >= min(0.6 * radius, float(depth.max()) * 0.8))
        if placed:
            far = np.ones(len(cand), bool)
            for py, px, pr in placed:
                far &= np.hypot(cand[:, 0] * step - py, cand[:, 1] * step - px) > 0.9 * (pr + radius)
            if far.any():
                cand = cand[far]
        r0, c0 = cand[rng.integers(len(cand))]
        cy, cx = (r0 + rng.uniform()) * step, (c0 + rng.uniform()) * step
        placed.append((cy, cx, radius))
        poly = _star_polygon(rng, cx, cy, radius)
        poly[:, 0] = np.clip(poly[:, 0], 0.0, float(w))
        poly[:, 1] = np.clip(poly[:, 1], 0.0, float(h))
        regions.append(_TumourRegion(poly, float(grade)))
    return regions


def _region_map(regions: Sequence[_TumourRegion], shape: tuple[int, int]) -> np.ndarray:
    """uint8 map: 0 outside tumour, k inside region k (later regions win where they overlap)."""
    out = np.zeros(shape, np.uint8)
    for k, region in enumerate(regions, start=1):
        out[rasterize_polygons([region.polygon], shape)] = k
    return out


def _draw_glands(
    rng: np.random.Generator,
    nuclei_rng: np.random.Generator,
    shape: tuple[int, int],
    mpp: float,
    allowed: np.ndarray,
    nuclei: _Nuclei,
    settings: GeneratorSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normal glands where ``allowed``: scattered ducts and lobules (clusters of small acini).

    Each gland is an epithelial ring around a lumen with one basal row of columnar nuclei (long axis
    radial), added to ``nuclei``. Returns (gland label image, lumen mask).
    """
    h, w = shape
    um = 1.0 / mpp
    # candidates and all their parameters first, so the stream does not depend on which are kept
    dy, dx = _hex_points(rng, shape, _hex_density(GLAND_SPACING_UM * um), jitter=0.3)
    duct_field = _smooth_field(rng, shape, 300.0 * um)
    ly, lx = _hex_points(rng, shape, _hex_density(LOBULE_SPACING_UM * um), jitter=0.3)
    lobule_r = rng.uniform(80.0, 160.0, ly.size) * um
    settings = DEFAULT_SETTINGS if settings is None else settings
    lobule_on = rng.uniform(size=ly.size) < settings.lobule_probability
    lobule_activity = rng.uniform(0.0, 1.0, ly.size)
    ay, ax = _hex_points(rng, shape, _hex_density(ACINUS_SPACING_UM * um), jitter=0.22)
    # which candidates are kept
    lobule_on &= _lookup(allowed, ly, lx)
    ly, lx, lobule_r, lobule_activity = (
        ly[lobule_on],
        lx[lobule_on],
        lobule_r[lobule_on],
        lobule_activity[lobule_on],
    )

    def lobule_gap(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(points, lobules) distance from each point to each lobule's rim (negative inside)."""
        return np.hypot(y[:, None] - ly[None, :], x[:, None] - lx[None, :]) - lobule_r[None, :]

    def near_lobule(y: np.ndarray, x: np.ndarray, margin: float) -> np.ndarray:
        if ly.size == 0:
            return np.zeros(y.shape, bool)
        return (lobule_gap(y, x) < margin).any(axis=1)

    keep_duct = (
        _lookup(allowed, dy, dx) & (_lookup(duct_field, dy, dx) > -0.4) & ~near_lobule(dy, dx, 60.0 * um)
    )
    keep_acinus = _lookup(allowed, ay, ax) & near_lobule(ay, ax, 0.0)
    n_d, n_a = dy.size, ay.size
    cy = np.concatenate([dy, ay])
    cx = np.concatenate([dx, ax])
    keep = np.concatenate([keep_duct, keep_acinus])
    r_outs = np.concatenate([rng.uniform(30.0, 65.0, n_d), rng.uniform(12.0, 19.0, n_a)]) * um
    elongs = np.concatenate([rng.uniform(1.0, 1.6, n_d), rng.uniform(1.0, 1.35, n_a)])
    lumen_ratios = np.concatenate([rng.uniform(0.35, 0.6, n_d), rng.uniform(0.2, 0.45, n_a)])
    tilts = rng.uniform(0, np.pi, n_d + n_a)
    harm_amp = rng.normal(0, 1.0, (n_d + n_a, 4)) * (0.08 / np.arange(2, 6))
    harm_ph = rng.uniform(0, 2 * np.pi, (n_d + n_a, 4))
    activity = np.concatenate([rng.uniform(0.0, 1.0, n_d), np.zeros(n_a)])  # acini: their lobule's
    if ly.size and n_a:
        activity[n_d:] = lobule_activity[np.argmin(lobule_gap(ay, ax), axis=1)]

    labels = np.zeros(shape, np.int32)
    lumen = np.zeros(shape, bool)

    def outer(i: int, theta: np.ndarray) -> np.ndarray:
        c, s = np.cos(theta - tilts[i]), np.sin(theta - tilts[i])
        ea, eb = r_outs[i] * math.sqrt(elongs[i]), r_outs[i] / math.sqrt(elongs[i])
        r = ea * eb / np.sqrt((eb * c) ** 2 + (ea * s) ** 2)
        for j, m in enumerate(range(2, 6)):
            r = r * (1.0 + harm_amp[i, j] * np.cos(m * theta + harm_ph[i, j]))
        return r

    pending: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
    for gid, i in enumerate(np.nonzero(keep)[0], start=1):
        reach = int(math.ceil(r_outs[i] * math.sqrt(elongs[i]) * 1.35)) + 2
        y0, y1 = max(int(cy[i]) - reach, 0), min(int(cy[i]) + reach + 1, h)
        x0, x1 = max(int(cx[i]) - reach, 0), min(int(cx[i]) + reach + 1, w)
        py = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - cy[i])
        px = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - cx[i])
        rr = np.sqrt(py * py + px * px)
        ro = outer(i, np.arctan2(py, px))
        box = (slice(y0, y1), slice(x0, x1))
        ok = (rr < ro) & allowed[box] & (labels[box] == 0)
        labels[box][ok] = gid
        lumen[box] |= (rr < ro * lumen_ratios[i]) & ok
        # one basal row of columnar nuclei, long axis radial
        perimeter = float(np.mean(outer(i, np.linspace(0, 2 * np.pi, 64)))) * 2 * np.pi
        n_nuc = max(int(perimeter * mpp / GLAND_NUCLEUS_SPACING_UM), 5)
        theta = (np.arange(n_nuc) + nuclei_rng.uniform(-0.25, 0.25, n_nuc)) * 2 * np.pi / n_nuc
        theta += nuclei_rng.uniform(0, 2 * np.pi)
        r_th = outer(i, theta)
        depth = nuclei_rng.uniform(0.22, 0.38, n_nuc) * (1 - lumen_ratios[i]) * r_th
        pending.append(
            (gid, i, cy[i] + np.sin(theta) * (r_th - depth), cx[i] + np.cos(theta) * (r_th - depth), theta)
        )
    for gid, i, ny, nx, theta in pending:
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ny, nx, theta = ny[inside], nx[inside], theta[inside]
        own = (_lookup(labels, ny, nx) == gid) & ~_lookup(lumen, ny, nx)
        lo, hi = settings.activity_range
        params = normal_nucleus_params(lo + (hi - lo) * float(activity[i]), settings.reactive_gain)
        nuclei.add(nuclei_rng, "normal", ny[own], nx[own], params, angle=theta[own])
    return labels, lumen
