"""Nuclei: the container that collects each population's parameters, and their splatting into a picture."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtlutils.synthetic.fields import _lognormal
from mtlutils.synthetic.model import H_NUCLEUS, NUCLEUS_TYPES

_NUCLEUS_FIELDS = (
    "y",
    "x",
    "area_um2",
    "ratio",
    "angle",
    "intensity",
    "texture",
    "coarse",
    "rim",
    "nucleolus",
    "irregular",
)


@dataclass
class _Nuclei:
    """Nuclei being assembled: per population, arrays of continuous px, radians, µm²."""

    parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(
        self,
        rng: np.random.Generator,
        kind: str,
        y: np.ndarray,
        x: np.ndarray,
        params: dict[str, float],
        angle: np.ndarray | None = None,
    ) -> None:
        n = len(y)
        if n == 0:
            return
        part = {
            "y": np.asarray(y, float),
            "x": np.asarray(x, float),
            "area_um2": _lognormal(rng, params["area"], params["cv"], n),
            "ratio": rng.uniform(params["ratio_lo"], params["ratio_hi"], n),
            "angle": rng.uniform(0, np.pi, n) if angle is None else np.asarray(angle, float),
            "intensity": np.clip(rng.normal(params["intensity"], params["intensity_sd"], n), 0.5, 3.0),
            "kind": np.full(n, NUCLEUS_TYPES.index(kind), dtype=np.int8),
        }
        for name in ("texture", "coarse", "rim", "nucleolus", "irregular"):
            part[name] = np.full(n, params[name])
        self.parts.append(part)

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.parts:
            out = {k: np.empty(0) for k in _NUCLEUS_FIELDS}
            out["kind"] = np.empty(0, np.int8)
            return out
        return {k: np.concatenate([p[k] for p in self.parts]) for k in (*_NUCLEUS_FIELDS, "kind")}


def _splat_nuclei(
    nuc: dict[str, np.ndarray],
    mpp: float,
    shape: tuple[int, int],
    fine: np.ndarray,
    coarse: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw nuclei as soft, slightly irregular ellipses.

    Returns (hematoxylin map, coverage map in [0, 1], drawn area in px² per nucleus). Vectorised per
    window size: all nuclei of one size are evaluated on their (2r+1)² windows at once; where nuclei
    overlap the darker value wins (``np.maximum.at``).
    """
    h, w = shape
    hmap = np.zeros(h * w, np.float32)
    cover = np.zeros(h * w, np.float32)
    n = nuc["y"].size
    area_px = np.zeros(n)
    if n == 0:
        return hmap.reshape(h, w), cover.reshape(h, w), area_px
    target_px = nuc["area_um2"] / mpp**2
    a = np.sqrt(target_px / np.pi * nuc["ratio"])  # semi-axes, px
    b = np.sqrt(target_px / np.pi / nuc["ratio"])
    radius = np.ceil(a * (1.0 + 1.5 * nuc["irregular"]) + 1.0).astype(np.int64)
    ph2, ph3 = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    amp2 = nuc["irregular"] * rng.uniform(0.5, 1.0, n)
    amp3 = nuc["irregular"] * rng.uniform(0.3, 0.8, n)
    nucleolus_r = rng.uniform(0.0, 0.45, n)
    nucleolus_t = rng.uniform(0, 2 * np.pi, n)

    def col(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return values[idx].astype(np.float32)[:, None, None]

    for r in np.unique(radius):
        idx = np.nonzero(radius == r)[0]
        off = np.arange(-r, r + 1)
        iy = np.floor(nuc["y"][idx]).astype(np.int64)
        ix = np.floor(nuc["x"][idx]).astype(np.int64)
        # window pixel centres relative to the nucleus centre
        dy = off.astype(np.float32)[None, :, None] - col(nuc["y"] - np.floor(nuc["y"]) - 0.5, idx)
        dx = off.astype(np.float32)[None, None, :] - col(nuc["x"] - np.floor(nuc["x"]) - 0.5, idx)
        cos, sin = col(np.cos(nuc["angle"]), idx), col(np.sin(nuc["angle"]), idx)
        u = (dx * cos + dy * sin) / col(a, idx)
        v = (-dx * sin + dy * cos) / col(b, idx)
        rho = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        rho = rho / (
            1.0
            + col(amp2, idx) * np.cos(2 * phi + col(ph2, idx))
            + col(amp3, idx) * np.cos(3 * phi + col(ph3, idx))
        )
        m = np.clip((1.0 - rho) * col(np.sqrt(a * b), idx) + 0.5, 0.0, 1.0)
        area_px[idx] = m.sum(axis=(1, 2))
        yy = iy[:, None, None] + off[None, :, None]
        xx = ix[:, None, None] + off[None, None, :]
        inside = (m > 0) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        yyc, xxc = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
        co = col(nuc["coarse"], idx)
        tex = (1 - co) * fine[yyc, xxc] + co * coarse[yyc, xxc]
        nu = u - col(nucleolus_r * np.cos(nucleolus_t), idx)
        nv = v - col(nucleolus_r * np.sin(nucleolus_t), idx)
        profile = (
            1.0
            + col(nuc["rim"], idx) * (np.minimum(rho, 1.0) ** 2 - 0.5)
            + col(nuc["texture"], idx) * tex
            + col(nuc["nucleolus"], idx) * np.exp(-(nu * nu + nv * nv) / (2 * 0.12**2))
        )
        value = np.float32(H_NUCLEUS) * col(nuc["intensity"], idx) * np.maximum(profile, 0.1) * m
        flat = (yy * w + xx)[inside]
        np.maximum.at(hmap, flat, value[inside])
        np.maximum.at(cover, flat, m[inside])
    return hmap.reshape(h, w), cover.reshape(h, w), area_px
