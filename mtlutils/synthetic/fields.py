"""Seeded random streams, smooth random fields, fibre streaks, lattices and point lookups."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

STREAMS = (
    "hidden",
    "layout",
    "tumour",
    "glands",
    "gland_nuclei",
    "tumour_nuclei",
    "stroma_nuclei",
    "lymph",
    "texture",
    "noise",
    "extra",  # difficulty options (foci, focus, annotation); appended, so older streams are unchanged
    "mimics",
)


def _streams(seed: int, center_name: str, index: int, kind: int = 1) -> dict[str, np.random.Generator]:
    """Independent named generators for item ``index`` of ``center_name`` under ``seed``.

    ``kind`` separates cohort plans (0), slides (1) and patches (2).
    """
    key = zlib.crc32(center_name.encode("utf-8"))
    children = np.random.SeedSequence([int(seed), key, int(kind), int(index)]).spawn(len(STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(STREAMS, children, strict=True)}


def _kernel_matrix(n_out: int, step: float) -> np.ndarray:
    """(n_out, n_coarse) Gaussian interpolation weights from a grid of spacing ``step`` px (unit variance)."""
    n_coarse = int(math.ceil(n_out / step)) + 5
    pos = (np.arange(n_coarse) - 2.0) * step
    x = np.arange(n_out, dtype=np.float64)[:, None] + 0.5
    k = np.exp(-0.5 * ((x - pos[None, :]) / step) ** 2)
    k /= np.sqrt((k**2).sum(axis=1, keepdims=True))
    return k.astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Smooth Gaussian random field (float32), mean 0, variance 1, features ~``scale_px`` across.

    Separable: a coarse grid of white noise (spacing scale/2) interpolated with Gaussian weights, as
    two small matrix products (no full-size filtering).
    """
    h, w = shape
    step = max(float(scale_px) / 2.0, 1.0)
    ky, kx = _kernel_matrix(h, step), _kernel_matrix(w, step)
    coarse = rng.standard_normal((ky.shape[1], kx.shape[1]), dtype=np.float32)
    return (ky @ coarse) @ kx.T


def _texture(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float, tile: int = 512
) -> np.ndarray:
    """Fine grain (Gaussian-filtered white noise, σ ``sigma_px``, unit variance), periodic with ``tile`` px.

    Only used for sub-cellular texture, where a 256-µm period cannot be seen.
    """
    base = rng.standard_normal((tile, tile), dtype=np.float32)
    base = ndimage.gaussian_filter(base, sigma=sigma_px, mode="wrap")
    base /= max(float(base.std()), 1e-6)
    reps = (math.ceil(shape[0] / tile), math.ceil(shape[1] / tile))
    return np.tile(base, reps)[: shape[0], : shape[1]]


def _streaks(rng: np.random.Generator, coord: np.ndarray, sigmas_px: Sequence[float]) -> list[np.ndarray]:
    """1-D smooth noises (unit variance, correlation lengths ``sigmas_px``) evaluated at ``coord``.

    Each is constant along the level lines of ``coord``: fibres that follow them. The 1-D noise is
    tabulated every 1/4 px, so evaluating it is one gather per pixel.
    """
    sub = 4
    lo = float(coord.min()) - 1.0
    n = int(math.ceil(float(coord.max()) - lo)) + 3
    index = ((coord - np.float32(lo)) * np.float32(sub) + np.float32(0.5)).astype(np.int32)
    fine = np.arange(n * sub) / sub
    out = []
    for sigma in sigmas_px:
        seq = ndimage.gaussian_filter1d(rng.standard_normal(n), sigma=sigma, mode="wrap")
        seq /= max(float(seq.std()), 1e-9)
        out.append(np.interp(fine, np.arange(n), seq).astype(np.float32)[index])
    return out


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(x - lo) / (hi - lo) clipped to [0, 1], float32 (a new array)."""
    t = (x - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.maximum(t, 0.0, out=t)
    np.minimum(t, 1.0, out=t)
    return t


def _hex_points(
    rng: np.random.Generator, shape: tuple[int, int], density_px: float, jitter: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Jittered hexagonal lattice with ``density_px`` points per px² (y, x in continuous px)."""
    h, w = shape
    if density_px <= 0:
        return np.empty(0), np.empty(0)
    d = math.sqrt(2.0 / (math.sqrt(3.0) * density_px))  # nearest-neighbour distance
    dy = d * math.sqrt(3.0) / 2.0
    oy, ox = rng.uniform(0, dy), rng.uniform(0, d)
    rows = np.arange(-1, int(h / dy) + 2)
    cols = np.arange(-1, int(w / d) + 2)
    yy = rows[:, None] * dy + oy + np.zeros((1, cols.size))
    xx = cols[None, :] * d + ox + (rows[:, None] % 2) * d / 2.0
    y = yy.ravel() + rng.uniform(-jitter, jitter, yy.size) * d
    x = xx.ravel() + rng.uniform(-jitter, jitter, xx.size) * d
    keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    return y[keep], x[keep]


def _lookup(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Values of ``image`` at continuous coordinates (the pixel that contains each point)."""
    r = np.clip(np.asarray(y).astype(np.int64), 0, image.shape[0] - 1)
    c = np.clip(np.asarray(x).astype(np.int64), 0, image.shape[1] - 1)
    return image[r, c]


def _lognormal(rng: np.random.Generator, mean: float, cv: float, n: int) -> np.ndarray:
    sigma2 = math.log1p(cv**2)
    return rng.lognormal(math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2), n)


def _hex_density(spacing_px: float) -> float:
    """Points per px² of a hexagonal lattice with nearest-neighbour distance ``spacing_px``."""
    return 2.0 / (math.sqrt(3.0) * spacing_px**2)
