"""Embedded synthetic multi-center H&E cohort whose hidden variables are all known.

Every lesson of the tutorial is *measured* on this cohort, so it is built to be honest: the tumour
signal is real but not trivial, the acquisition center is a planted confounder that a control cohort
(``confounder=False``) removes, and nothing here is tuned to make any learning method win.

Rendering (Beer–Lambert stain mixing)
    Per pixel, a hematoxylin concentration ``H`` and an eosin concentration ``E`` (optical density per
    unit stain vector, natural log) come from the tissue compartments below; the transmitted light is
    ``I_c = I0 · exp(-s · (H · h_c + E · e_c))`` for channel c, with the center's OD unit vectors
    ``h``, ``e`` (:attr:`CenterStyle.stain_od`), glass brightness ``I0`` and stain strength ``s``,
    followed by an optical blur (Gaussian, σ in µm) and sensor noise (near-Gaussian, σ in 0..255
    units). Each slide jitters its center's stain a little (vector directions by ~1.5°, strength by
    ±6 %), as the slides of one lab do. Colour deconvolution, Reinhard and Macenko therefore behave as
    on real slides.

Tissue (sizes in µm, whatever the ``mpp``)
    - white glass outside an irregular tissue outline covering ~30–70 % of a slide (patches from
      :func:`render_patch` are all tissue);
    - stroma: wavy collagen bundles and fibres (E ≈ 0.5–1.1, H 0.04) with white clefts; inside tumour
      regions a paler, flatter (desmoplastic) stroma that holds twice as many stromal nuclei;
    - normal glands, each an epithelial ring around a lumen with one basal row of columnar nuclei
      ~7.5 µm apart (long axis radial) and lilac cytoplasm (E 0.42, H 0.12): scattered ducts (outer
      radius 30–65 µm) and lobules (radius 80–160 µm) packed with small acini (radius 12–19 µm), so
      normal tissue has epithelium-dense areas too;
    - tumour regions (the annotated polygons): nests and sheets of tumour cells (cytoplasm E 0.30,
      H 0.20). Each region has a *grade* g ~ U(0, 1) that sets its architecture and nuclei:
      epithelial fraction 0.55 + 0.3 g, nest size 25 + 30 g µm, gland-like lumens only at low grade
      (up to ~15 % at g = 0).

Nuclei (ground truth: centroid, area, type, relative hematoxylin load ``intensity``)
    ===========  =============  ===========  ===============  ==================  ========================
    type         mean area µm²  area CV      axis ratio       intensity           density
    ===========  =============  ===========  ===============  ==================  ========================
    normal       34 + 16 a      0.15         1.2–1.7          0.95 + 0.1 a,       basal row, ~7.5 µm apart
                                                              sd 0.08
    stromal      30             0.20         2.5–4.0          1.05 ± 0.08         900 /mm² of stroma
                                                                                  (1800 in tumour stroma)
    lymphocyte   24             0.12         1.0–1.15         1.45 ± 0.08         see TME below
    tumour       42 + 60 g      0.18 + 0.25g 1.0–(1.3+0.5g)   1.05 + 0.4 g,       3800 + 1700 g /mm² of
                                                              sd 0.08 + 0.1 g     tumour epithelium
    ===========  =============  ===========  ===============  ==================  ========================

    a ~ U(0, 1) is the *activity* of a normal duct or lobule (resting to reactive epithelium). (An
    area of 24–110 µm² is a nucleus 5.5–12 µm across; ``intensity`` 1 is a hematoxylin
    concentration of 1.8.) Tumour nuclei also get coarser chromatin (texture 0.12 + 0.2 g), a darker
    rim (chromatin margination, 0.5 g), a nucleolus (0.5 g) and irregular outlines (0.04 + 0.12 g).
    A low-grade (g ≈ 0) tumour therefore overlaps normal epithelium in nuclear size, density and
    darkness; a high-grade one (g ≈ 1) does not. Per mm² of *tissue*, tumour regions hold ~1–1.6x
    as many nuclei as normal tissue (more at higher grade). ``area_um2`` is the area actually drawn.
    Measured on 224-px patches (0.5 µm/px) with :func:`mtlutils.concepts.patch_concepts`, the
    segmented mean nuclear area alone separates tumour from normal patches with AUC ≈ 0.90, nuclei
    count ≈ 0.8, all concepts together (logistic regression) ≈ 0.95: learnable, not trivial.

Slide-level variables
    - ``has_tumour``: exactly ⌊prevalence · n + ½⌋ of a center's n slides carry tumour (which ones: a
      seeded permutation shared by the confounded and the control cohort, so the tumour slides at a
      lower prevalence are a subset of those at a higher one). A tumour slide has 1–3 regions
      covering a fraction 0.10 + 0.5 · prevalence ± 0.08 of its tissue, so a center's prevalence sets
      both its slide-level and its patch-level tumour rate (the planted confounder).
    - ``biomarker``: binary, half of each center's slides positive (seeded permutation), independent
      of tumour and center.
    - ``tme_score`` = sigmoid(1.8 · (biomarker − 0.5) + N(0, 1)) in [0, 1]: positive slides score
      ~0.36 higher on average, but the distributions overlap (AUC of the TME score for the biomarker
      ≈ 0.90 in expectation). Lymphocytes are an inhomogeneous Poisson process of mean density
      150 + 2600 · tme per mm² of stroma (a quarter of that inside tumour epithelium), patchy
      (log-normal intensity, scale ~60 µm), with a hard core (none centred within 6 µm of another
      nucleus or 5 µm of another lymphocyte). The biomarker acts on the image *only* through them.

Centers
    Training centers A, B, C differ in stain (vectors, I0, strength, blur, noise) and in tumour
    prevalence 0.8 / 0.5 / 0.2; external center D has a visibly different stain (bluer hematoxylin,
    orange eosin, greyer glass, stronger staining, more blur and noise) and prevalence 0.5.
    ``confounder=False`` (the control) gives every training center the training mean (0.5);
    everything else is identical for one seed. Tissue morphology never depends on the center.

Coordinates: level-0 pixels, x to the right, y down, continuous, pixel (r, c) covering
[c, c+1) × [r, r+1) (as in :mod:`mtlutils.data.annotations`): a centroid at the centre of pixel (r, c)
is x = c + 0.5, y = r + 0.5 (add 0.5 to ``regionprops`` centroids before comparing).

Determinism: each slide draws from its own generators derived from (seed, center name, slide index),
one independent stream per part of the picture (layout, tumour, glands, each nucleus population,
texture, noise), so slides can be made in any order, in parallel or resumed, and a control slide
differs from its confounded twin only where its tumour differs.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing as mp
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage, special
from scipy.spatial import cKDTree

from mtlutils.core.runtime import child_threads, set_threads

__all__ = [
    "CenterStyle",
    "SyntheticSlide",
    "NUCLEUS_TYPES",
    "MANIFEST_COLUMNS",
    "NUCLEI_COLUMNS",
    "default_centers",
    "get_center",
    "normal_nucleus_params",
    "tumour_nucleus_params",
    "render_patch",
    "generate_slide",
    "plan_cohort",
    "generate_cohort",
    "GROUND_TRUTH_COLUMNS",
    "patch_ground_truth",
    "patch_dir_ground_truth",
    "read_nuclei",
    "nuclei_in_patch",
    "patch_dir_true_nuclei",
]

NUCLEUS_TYPES = ("normal", "stromal", "lymphocyte", "tumour")
MANIFEST_COLUMNS = (
    "slide_id",
    "patient_id",
    "center",
    "split",
    "path",
    "has_tumour",
    "biomarker",
    "tme_score",
    "annotation",
    "nuclei",
    "mpp",
)
NUCLEI_COLUMNS = ("x_px", "y_px", "area_um2", "type", "intensity")

MIN_SLIDE_PX = 512  # room for tissue, tumour regions and >= 2 pyramid levels of 256-px tiles
MIN_PATCH_PX = 32
MPP_RANGE = (0.2, 2.0)
FORMAT_VERSION = 1
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}

# ---- nuclei (µm², relative hematoxylin load); see the module docstring ----------------------------
NUCLEUS_PARAMS: dict[str, dict[str, float]] = {
    "normal": dict(
        area=40.0,
        cv=0.15,
        ratio_lo=1.2,
        ratio_hi=1.7,
        intensity=1.0,
        intensity_sd=0.08,
        texture=0.15,
        coarse=0.0,
        rim=0.0,
        nucleolus=0.0,
        irregular=0.03,
    ),
    "stromal": dict(
        area=30.0,
        cv=0.20,
        ratio_lo=2.5,
        ratio_hi=4.0,
        intensity=1.05,
        intensity_sd=0.08,
        texture=0.08,
        coarse=0.0,
        rim=0.0,
        nucleolus=0.0,
        irregular=0.02,
    ),
    "lymphocyte": dict(
        area=24.0,
        cv=0.12,
        ratio_lo=1.0,
        ratio_hi=1.15,
        intensity=1.45,
        intensity_sd=0.08,
        texture=0.05,
        coarse=0.0,
        rim=0.0,
        nucleolus=0.0,
        irregular=0.02,
    ),
}
GLAND_NUCLEUS_SPACING_UM = 7.5
GLAND_SPACING_UM = 210.0  # ducts: hexagonal lattice, thinned by a smooth field
LOBULE_SPACING_UM = 450.0  # lobules: clusters of acini, radius 80–160 µm
LOBULE_PROBABILITY = 0.45
ACINUS_SPACING_UM = 40.0
STROMA_NUCLEI_PER_MM2 = 900.0
TUMOUR_STROMA_NUCLEI_PER_MM2 = 1800.0
LYMPH_BASE_PER_MM2 = 150.0
LYMPH_TME_PER_MM2 = 2600.0
LYMPH_IN_EPITHELIUM = 0.25
LYMPH_MIN_GAP_UM = 5.0  # lymphocyte centres at least this far apart (packed aggregates stay possible)
NUCLEUS_MIN_GAP_UM = 6.0  # no lymphocyte centred closer than this to another nucleus
TME_SLOPE = 1.8  # logit of the TME score = TME_SLOPE * (biomarker - 0.5) + TME_NOISE * N(0, 1)
TME_NOISE = 1.0
H_NUCLEUS = 1.8  # hematoxylin concentration of a nucleus of intensity 1
E_NUCLEUS = 0.18  # eosin left inside a nucleus


def normal_nucleus_params(activity: float) -> dict[str, float]:
    """Normal epithelial nuclear parameters of a gland or lobule with ``activity`` in [0, 1].

    Resting (0) to active/reactive (1) epithelium: mean area 34–50 µm², a little darker when active.
    """
    a = float(activity)
    return {**NUCLEUS_PARAMS["normal"], "area": 34.0 + 16.0 * a, "intensity": 0.95 + 0.1 * a}


def tumour_nucleus_params(grade: float) -> dict[str, float]:
    """Tumour nuclear parameters at ``grade`` in [0, 1] (areas µm², density per mm² of epithelium)."""
    g = float(grade)
    return dict(
        area=42.0 + 60.0 * g,
        cv=0.18 + 0.25 * g,
        ratio_lo=1.0,
        ratio_hi=1.3 + 0.5 * g,
        intensity=1.05 + 0.4 * g,
        intensity_sd=0.08 + 0.10 * g,
        texture=0.12 + 0.2 * g,
        coarse=g,
        rim=0.5 * g,
        nucleolus=0.5 * g,
        irregular=0.04 + 0.12 * g,
        density=3800.0 + 1700.0 * g,
    )


def tumour_area_fraction(prevalence: float) -> float:
    """Mean fraction of a tumour slide's tissue inside tumour regions at a center's ``prevalence``."""
    return 0.10 + 0.5 * float(prevalence)


def tme_from_biomarker(biomarker: int, z: float) -> float:
    """TME score in [0, 1] from the binary biomarker and a standard-normal draw ``z``."""
    return float(special.expit(TME_SLOPE * (int(biomarker) - 0.5) + TME_NOISE * float(z)))


# --------------------------------------------------------------------------------------------------
# Centers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CenterStyle:
    """One acquisition center: stain, scanner and tumour prevalence.

    ``stain_od``: (2, 3) optical-density unit vectors (rows hematoxylin, eosin; columns R, G, B),
    normalised on construction. ``intensity``: I0, the brightness of empty glass (0..255).
    ``stain_strength``: multiplies all concentrations. ``blur_sigma_um``: optical blur (Gaussian σ, µm).
    ``noise_std``: sensor noise (σ, 0..255 units). ``tumour_prevalence``: fraction of tumour slides.
    """

    name: str
    role: str  # "train" | "external"
    stain_od: np.ndarray
    intensity: float
    stain_strength: float
    blur_sigma_um: float
    noise_std: float
    tumour_prevalence: float

    def __post_init__(self) -> None:
        od = np.array(self.stain_od, dtype=np.float64)
        if od.shape != (2, 3) or not np.isfinite(od).all() or (od < 0).any():
            raise ValueError(
                f"CenterStyle {self.name!r}: stain_od must be a non-negative (2, 3) array (rows H, E), got shape {od.shape}"
            )
        norms = np.linalg.norm(od, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(
                f"CenterStyle {self.name!r}: a stain vector is all zero; give two non-zero OD vectors"
            )
        od = od / norms
        od.setflags(write=False)
        object.__setattr__(self, "stain_od", od)
        if self.role not in ("train", "external"):
            raise ValueError(f"CenterStyle {self.name!r}: role={self.role!r} must be 'train' or 'external'")
        if not 0 < self.intensity <= 255:
            raise ValueError(f"CenterStyle {self.name!r}: intensity={self.intensity} must be in (0, 255]")
        if not 0 <= self.tumour_prevalence <= 1:
            raise ValueError(
                f"CenterStyle {self.name!r}: tumour_prevalence={self.tumour_prevalence} must be in [0, 1]"
            )
        if self.stain_strength <= 0 or self.blur_sigma_um < 0 or self.noise_std < 0:
            raise ValueError(
                f"CenterStyle {self.name!r}: stain_strength must be > 0, blur_sigma_um and noise_std >= 0"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (for cohort.json)."""
        return {
            "name": self.name,
            "role": self.role,
            "stain_od": np.round(self.stain_od, 6).tolist(),
            "intensity": float(self.intensity),
            "stain_strength": float(self.stain_strength),
            "blur_sigma_um": float(self.blur_sigma_um),
            "noise_std": float(self.noise_std),
            "tumour_prevalence": float(self.tumour_prevalence),
        }


_CONFOUNDED_PREVALENCE = {"A": 0.8, "B": 0.5, "C": 0.2, "D": 0.5}


def default_centers(confounder: bool = True) -> list[CenterStyle]:
    """Training centers A, B, C and external center D.

    ``confounder=True``: tumour prevalence 0.8 / 0.5 / 0.2 in A / B / C (the stain predicts the label
    inside the training data). ``False`` (control): every training center gets their mean, 0.5.
    D (external, unseen stain) has 0.5 in both.
    """
    train_mean = float(np.mean([_CONFOUNDED_PREVALENCE[c] for c in "ABC"]))

    def prev(name: str) -> float:
        return _CONFOUNDED_PREVALENCE[name] if (confounder or name == "D") else train_mean

    # rows: hematoxylin, eosin OD directions (R, G, B); I0, strength, blur µm, noise
    return [
        CenterStyle(
            "A", "train", [[0.56, 0.72, 0.41], [0.12, 0.84, 0.53]], 242.0, 1.00, 0.40, 3.0, prev("A")
        ),
        CenterStyle(
            "B", "train", [[0.52, 0.74, 0.43], [0.17, 0.86, 0.48]], 236.0, 1.15, 0.55, 3.5, prev("B")
        ),
        CenterStyle(
            "C", "train", [[0.59, 0.71, 0.38], [0.10, 0.82, 0.56]], 248.0, 0.85, 0.30, 2.5, prev("C")
        ),
        CenterStyle(
            "D", "external", [[0.78, 0.60, 0.18], [0.02, 0.55, 0.83]], 226.0, 1.25, 0.85, 5.0, prev("D")
        ),
    ]


def get_center(center: str | CenterStyle, confounder: bool = True) -> CenterStyle:
    """A :class:`CenterStyle` by name (``"A"`` … ``"D"``), or ``center`` itself."""
    if isinstance(center, CenterStyle):
        return center
    centers = {c.name: c for c in default_centers(confounder)}
    if center not in centers:
        raise ValueError(f"unknown center {center!r}; use one of {sorted(centers)} or pass a CenterStyle")
    return centers[center]


def _jitter_stain(rng: np.random.Generator, style: CenterStyle) -> tuple[np.ndarray, float]:
    """A slide's own stain: the center's vectors turned by ~1.5° and its strength scaled by ±6 %."""
    od = np.clip(style.stain_od + rng.normal(0.0, 0.025, size=(2, 3)), 1e-3, None)
    od /= np.linalg.norm(od, axis=1, keepdims=True)
    return od, style.stain_strength * float(rng.uniform(0.94, 1.06))


# --------------------------------------------------------------------------------------------------
# Random fields and points
# --------------------------------------------------------------------------------------------------

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


def _fill_polygon(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of pixels whose centre lies inside ``polygon`` ((K, 2) x, y; even-odd rule).

    Scan-line fill, vectorised over rows and edges; same convention as
    :func:`mtlutils.data.annotations.rasterize_polygons`.
    """
    h, w = shape
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = np.arange(h, dtype=np.float64)[:, None] + 0.5
    crosses = ((y0[None, :] <= yc) & (y1[None, :] > yc)) | ((y1[None, :] <= yc) & (y0[None, :] > yc))
    rows, edges = np.nonzero(crosses)
    t = (yc[rows, 0] - y0[edges]) / (y1[edges] - y0[edges])
    xs = x0[edges] + t * (x1[edges] - x0[edges])
    first_col = np.clip(np.ceil(xs - 0.5), 0, w).astype(np.int64)  # first pixel centre right of x
    toggles = np.zeros((h, w + 1), np.int32)
    np.add.at(toggles, (rows, first_col), 1)
    return (np.cumsum(toggles[:, :w], axis=1) % 2).astype(bool)


# --------------------------------------------------------------------------------------------------
# Nuclei
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Tissue layout
# --------------------------------------------------------------------------------------------------


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
        out[_fill_polygon(region.polygon, shape)] = k
    return out


def _hex_density(spacing_px: float) -> float:
    """Points per px² of a hexagonal lattice with nearest-neighbour distance ``spacing_px``."""
    return 2.0 / (math.sqrt(3.0) * spacing_px**2)


def _draw_glands(
    rng: np.random.Generator,
    nuclei_rng: np.random.Generator,
    shape: tuple[int, int],
    mpp: float,
    allowed: np.ndarray,
    nuclei: _Nuclei,
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
    lobule_on = rng.uniform(size=ly.size) < LOBULE_PROBABILITY
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
        params = normal_nucleus_params(float(activity[i]))
        nuclei.add(nuclei_rng, "normal", ny[own], nx[own], params, angle=theta[own])
    return labels, lumen


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _render(
    shape: tuple[int, int],
    mpp: float,
    style: CenterStyle,
    stain_od: np.ndarray,
    strength: float,
    tissue: np.ndarray,
    regions: Sequence[_TumourRegion],
    region_map: np.ndarray,
    tme_score: float,
    rngs: dict[str, np.random.Generator],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Paint tissue compartments and nuclei, then mix the stains into RGB. Returns (rgb, nuclei table)."""
    h, w = shape
    um = 1.0 / mpp  # px per µm
    layout = rngs["layout"]
    tumour = region_map > 0
    nuclei = _Nuclei()

    # --- stroma: wavy collagen bundles and fibres following the level lines of `across`
    theta0 = layout.uniform(0, np.pi)
    amp1, amp2 = 60.0 * um, 20.0 * um
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    across = (
        xx * np.float32(-math.sin(theta0))
        + yy * np.float32(math.cos(theta0))
        + np.float32(amp1) * _smooth_field(layout, shape, 250.0 * um)
        + np.float32(amp2) * _smooth_field(layout, shape, 50.0 * um)
    )
    (bundles,) = _streaks(layout, across, (5.0 * um,))
    across += np.float32(3.0 * um) * _smooth_field(layout, shape, 10.0 * um)  # kinks in the fine fibres
    fibres, clefts = _streaks(layout, across, (1.0 * um, 2.0 * um))
    along = _smooth_field(layout, shape, 40.0 * um)
    breaks = _smooth_field(layout, shape, 14.0 * um)
    level = 0.8 + 0.22 * np.tanh(1.5 * bundles) + 0.12 * fibres + 0.1 * along
    np.clip(level, 0.25, 1.2, out=level)
    clefts *= -1.0
    cleft = _ramp(clefts, 0.55, 0.8)
    cleft *= _ramp(breaks, -0.5, -0.2)
    e_stroma = level * (1.0 - 0.93 * cleft)

    # --- normal glands outside tumour
    glands, lumen = _draw_glands(rngs["glands"], rngs["gland_nuclei"], shape, mpp, tissue & ~tumour, nuclei)
    epithelium = glands > 0

    # --- tumour nests, per region and grade (fields computed in the region's bounding box only)
    tumour_epi = np.zeros(shape, bool)
    trng, nrng = rngs["tumour"], rngs["tumour_nuclei"]
    for k, region in enumerate(regions, start=1):
        g = region.grade
        y0, x0 = (max(int(math.floor(v)), 0) for v in region.polygon[:, ::-1].min(axis=0))
        y1, x1 = (
            min(int(math.ceil(v)), n) for v, n in zip(region.polygon[:, ::-1].max(axis=0), shape, strict=True)
        )
        if y1 <= y0 or x1 <= x0:
            continue
        box = (slice(y0, y1), slice(x0, x1))
        sub = (y1 - y0, x1 - x0)
        nest = _smooth_field(trng, sub, (25.0 + 30.0 * g) * um)
        threshold = float(special.ndtri(1.0 - (0.55 + 0.3 * g)))
        epi_k = (region_map[box] == k) & (nest > threshold)
        lum_frac = 0.15 * (1.0 - g)
        if lum_frac > 0.01:
            lum_field = _smooth_field(trng, sub, 9.0 * um)
            lumen[box] |= (
                epi_k & (nest > threshold + 0.6) & (lum_field > float(special.ndtri(1.0 - 2.0 * lum_frac)))
            )
        tumour_epi[box] |= epi_k
        params = tumour_nucleus_params(g)
        ty, tx = _hex_points(nrng, sub, params["density"] * 1e-6 * mpp**2, jitter=0.3)
        sel = _lookup(epi_k, ty, tx) & ~_lookup(lumen[box], ty, tx)
        nuclei.add(nrng, "tumour", ty[sel] + y0, tx[sel] + x0, params)
    epithelium |= tumour_epi
    stroma = tissue & ~epithelium & ~lumen

    # --- stromal nuclei, long axis along the collagen
    srng = rngs["stroma_nuclei"]
    sy, sx = _hex_points(srng, shape, TUMOUR_STROMA_NUCLEI_PER_MM2 * 1e-6 * mpp**2, jitter=0.45)
    thin = srng.uniform(size=sy.size) < STROMA_NUCLEI_PER_MM2 / TUMOUR_STROMA_NUCLEI_PER_MM2
    sel = _lookup(stroma, sy, sx) & (_lookup(tumour, sy, sx) | thin)
    sy, sx = sy[sel], sx[sel]
    grad_x = _lookup(across, sy, sx + 1) - _lookup(across, sy, sx - 1)
    grad_y = _lookup(across, sy + 1, sx) - _lookup(across, sy - 1, sx)
    fibre_dir = np.arctan2(grad_x, -grad_y)  # perpendicular to grad(across)
    nuclei.add(
        srng, "stromal", sy, sx, NUCLEUS_PARAMS["stromal"], angle=fibre_dir + srng.normal(0, 0.15, sy.size)
    )

    # --- lymphocytes: inhomogeneous Poisson (thinning), density ∝ TME score, patchy
    lrng = rngs["lymph"]
    patchy = _smooth_field(lrng, shape, 60.0 * um)
    log_cap = 1.2 * 2.5 - 0.72
    per_px = (LYMPH_BASE_PER_MM2 + LYMPH_TME_PER_MM2 * float(tme_score)) * 1e-6 * mpp**2
    n_cand = int(lrng.poisson(per_px * math.exp(log_cap) * h * w))
    ly, lx = lrng.uniform(0, h, n_cand), lrng.uniform(0, w, n_cand)
    weight = _lookup(stroma, ly, lx) + LYMPH_IN_EPITHELIUM * (
        _lookup(tumour_epi, ly, lx) & ~_lookup(lumen, ly, lx)
    )
    accept = np.exp(1.2 * np.minimum(_lookup(patchy, ly, lx), 2.5) - 0.72 - log_cap) * weight
    sel = lrng.uniform(size=n_cand) < accept
    ly, lx = ly[sel], lx[sel]
    # hard core: no lymphocyte centred on another nucleus, none closer than LYMPH_MIN_GAP_UM to an earlier one
    others = nuclei.arrays()
    if ly.size and others["y"].size:
        near = cKDTree(np.column_stack([others["y"], others["x"]])).query(np.column_stack([ly, lx]))[0]
        ly, lx = ly[near > NUCLEUS_MIN_GAP_UM * um], lx[near > NUCLEUS_MIN_GAP_UM * um]
    if ly.size > 1:
        pairs = cKDTree(np.column_stack([ly, lx])).query_pairs(LYMPH_MIN_GAP_UM * um, output_type="ndarray")
        keep = np.ones(ly.size, bool)
        keep[pairs.max(axis=1)] = False
        ly, lx = ly[keep], lx[keep]
    nuclei.add(lrng, "lymphocyte", ly, lx, NUCLEUS_PARAMS["lymphocyte"])

    # --- background concentrations per compartment: base + grain gain * grain + collagen gain * collagen
    #     compartments: glass, stroma, tumour stroma (desmoplastic: paler, flatter), normal epithelium,
    #     tumour epithelium, lumen
    compartment = np.zeros(shape, np.uint8)
    compartment[stroma] = 1
    compartment[stroma & tumour] = 2
    compartment[epithelium & ~tumour_epi] = 3
    compartment[tumour_epi] = 4
    compartment[lumen & tissue] = 5
    grain2 = _texture(rngs["texture"], shape, 2.0 * um)
    e_base = np.array([0.0, 0.0, 0.10, 0.42, 0.30, 0.06], np.float32)
    e_grain = np.array([0.0, 0.0, 0.0, 0.04, 0.05, 0.05], np.float32)
    e_collagen = np.array([0.0, 1.0, 0.75, 0.0, 0.0, 0.0], np.float32)
    h_base = np.array([0.0, 0.04, 0.06, 0.12, 0.20, 0.01], np.float32)
    e_map = e_base[compartment] + e_grain[compartment] * grain2 + e_collagen[compartment] * e_stroma
    np.maximum(e_map, 0.0, out=e_map)
    h_map = h_base[compartment]

    # --- nuclei
    arrays = nuclei.arrays()
    trng = rngs["texture"]
    fine_tex = _texture(trng, shape, 0.3 * um, tile=256)
    coarse_tex = _texture(trng, shape, 0.8 * um, tile=256)
    h_nuc, cover, area_px = _splat_nuclei(arrays, mpp, shape, fine_tex, coarse_tex, trng)
    h_map = h_map * (1 - cover) + h_nuc
    e_map = e_map * (1 - cover) + np.float32(E_NUCLEUS) * cover

    rgb = _mix_stains(h_map, e_map, style, stain_od, strength, mpp, rngs["noise"])
    table = pd.DataFrame(
        {
            "x_px": np.round(arrays["x"], 2),
            "y_px": np.round(arrays["y"], 2),
            "area_um2": np.round(area_px * mpp**2, 2),
            "type": np.asarray(NUCLEUS_TYPES, dtype=object)[arrays["kind"]],
            "intensity": np.round(arrays["intensity"], 3),
        },
        columns=list(NUCLEI_COLUMNS),
    )
    return rgb, table


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (σ px, edges repeated, float32). Along rows by shifted sums of whole rows, which is
    ~10x faster than ``ndimage`` on that axis; along columns by ``ndimage.gaussian_filter1d``."""
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    n = image.shape[0]
    padded = np.concatenate(
        [np.repeat(image[:1], radius, axis=0), image, np.repeat(image[-1:], radius, axis=0)]
    )
    acc = padded[0:n] * taps[0]
    for k in range(1, taps.size):
        acc += padded[k : k + n] * taps[k]
    return ndimage.gaussian_filter1d(acc, sigma, axis=1, mode="nearest", truncate=3.0)


def _mix_stains(
    h_map: np.ndarray,
    e_map: np.ndarray,
    style: CenterStyle,
    stain_od: np.ndarray,
    strength: float,
    mpp: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Beer–Lambert I = I0 · exp(-strength · (H h + E e)), then optical blur and sensor noise (uint8)."""
    out = np.empty((*h_map.shape, 3), np.uint8)
    sigma = style.blur_sigma_um / mpp
    log_i0 = np.float32(math.log(style.intensity))
    for c in range(3):
        light = h_map * np.float32(-strength * stain_od[0, c])
        light -= e_map * np.float32(strength * stain_od[1, c])
        light += log_i0
        np.exp(light, out=light)
        if sigma >= 0.25:
            light = _blur(light, sigma)
        if style.noise_std > 0:  # triangular noise (sum of two uniforms, σ = noise_std): cheap, near-Gaussian
            noise = rng.random(light.shape, dtype=np.float32)
            noise += rng.random(light.shape, dtype=np.float32)
            noise -= 1.0
            noise *= np.float32(style.noise_std * math.sqrt(6.0))
            light += noise
        light += 0.5
        np.clip(light, 0, 255, out=light)
        out[..., c] = light
    return out


# --------------------------------------------------------------------------------------------------
# Slides and patches
# --------------------------------------------------------------------------------------------------


@dataclass
class SyntheticSlide:
    """One rendered slide and its ground truth.

    ``rgb``: (H, W, 3) uint8 level 0. ``polygons``: tumour outlines, each (K, 2) x, y in level-0 px.
    ``nuclei``: columns x_px, y_px, area_um2, type, intensity. ``grades``: one per tumour region.
    ``tumour_fraction``: fraction of the tissue inside tumour polygons. ``stain_od`` and
    ``stain_strength``: this slide's own (jittered) stain.
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


def _check_mpp(mpp: float) -> float:
    mpp = float(mpp)
    if not (MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
        raise ValueError(
            f"mpp={mpp} is outside {MPP_RANGE[0]}–{MPP_RANGE[1]} µm/px; use e.g. 0.5 (a 20x scan)"
        )
    return mpp


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
    style: CenterStyle, index: int, seed: int
) -> tuple[dict[str, np.random.Generator], dict[str, Any]]:
    """The slide's generators and its hidden variables: stain jitter, tumour grades and target area."""
    rngs = _streams(seed, style.name, index, kind=1)
    hidden = rngs["hidden"]
    stain_od, strength = _jitter_stain(hidden, style)
    n_regions = int(hidden.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    grades = hidden.uniform(0.0, 1.0, 3)[:n_regions]
    jitter = hidden.uniform(-0.08, 0.08)
    fraction = float(np.clip(tumour_area_fraction(style.tumour_prevalence) + jitter, 0.08, 0.7))
    return rngs, {
        "stain_od": stain_od,
        "stain_strength": strength,
        "grades": [float(g) for g in grades],
        "target_tumour_fraction": fraction,
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
) -> SyntheticSlide:
    """Render slide ``index`` of ``center`` (deterministic in seed, center name and index).

    ``tme_score`` in [0, 1] sets the lymphocyte density; ``biomarker`` is only stored (it acts through
    the TME score). ``size_px``: side of the square level-0 image (>= 512); ``mpp``: µm per pixel.
    """
    center = get_center(center)
    index = _check_int("index", index, 0, "slides are numbered from 0")
    size_px = _check_int(
        "size_px", size_px, MIN_SLIDE_PX, f"a slide needs at least {MIN_SLIDE_PX} px (default 2048)"
    )
    mpp = _check_mpp(mpp)
    tme_score = _check_unit("tme_score", tme_score)
    shape = (size_px, size_px)
    rngs, hidden = _slide_hidden(center, index, int(seed))
    with _one_blas_thread():
        tissue = _tissue_mask(rngs["layout"], shape)
    regions: list[_TumourRegion] = []
    region_map = np.zeros(shape, np.uint8)
    if has_tumour:
        regions = _place_tumours(rngs["tumour"], tissue, hidden["target_tumour_fraction"], hidden["grades"])
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
    )


def render_patch(
    center: str | CenterStyle = "A",
    tumour: bool = False,
    size_px: int = 224,
    mpp: float = 0.5,
    seed: int = 0,
    tme_score: float = 0.3,
    grade: float | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """One (size_px, size_px, 3) uint8 patch fully covered by tissue, and its nuclei table.

    ``tumour=True``: the whole patch lies inside a tumour region of ``grade`` (None: drawn from
    U(0, 1)); else normal tissue (stroma, maybe part of a gland or lobule). The table has x_px, y_px
    (patch px, a pixel's centre at +0.5), area_um2, type, intensity. Deterministic in all arguments;
    the tissue depends on the seed (not on the center), so one seed shows the same tissue under each
    center's stain.
    """
    style = get_center(center)
    size_px = _check_int(
        "size_px", size_px, MIN_PATCH_PX, f"a patch needs at least {MIN_PATCH_PX} px (e.g. 224)"
    )
    mpp = _check_mpp(mpp)
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
        return _render(shape, mpp, style, stain_od, strength, tissue, regions, region_map, tme_score, rngs)


# --------------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------------


def _assign_splits(rng: np.random.Generator, has_tumour: np.ndarray) -> np.ndarray:
    """train / val / test (≈ 60/20/20) for one center's slides, stratified by ``has_tumour``.

    n >= 3: at least one slide in each split (val = test = max(1, round(0.2 n))). n = 2: train, val;
    n = 1: train. Slides are ordered stratum by stratum (smaller stratum first, shuffled inside) and
    dealt to the split that is furthest behind its quota, so each stratum is split proportionally.
    """
    n = len(has_tumour)
    if n == 1:
        return np.array(["train"], dtype=object)
    if n == 2:
        quota = {"train": 1, "val": 1, "test": 0}
    else:
        n_val = max(1, int(math.floor(SPLIT_FRACTIONS["val"] * n + 0.5)))
        n_test = max(1, int(math.floor(SPLIT_FRACTIONS["test"] * n + 0.5)))
        quota = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    strata = [np.nonzero(has_tumour == v)[0] for v in (True, False)]
    strata.sort(key=len)
    order = np.concatenate([rng.permutation(s) for s in strata])
    splits = np.empty(n, dtype=object)
    dealt = dict.fromkeys(quota, 0)
    for k, i in enumerate(order):
        name = max(quota, key=lambda s: quota[s] * (k + 1) / n - dealt[s])  # ties: train, val, test
        splits[i] = name
        dealt[name] += 1
    return splits


def plan_cohort(
    slides_per_center: int = 8,
    seed: int = 0,
    confounder: bool = True,
    centers: Sequence[CenterStyle] | None = None,
) -> pd.DataFrame:
    """Slide-level design of a cohort, without rendering: one row per slide.

    Columns: slide_id, patient_id, center, index, split, has_tumour, biomarker, tme_score.
    Deterministic in (slides_per_center, seed, confounder); see the module docstring for the rules.
    """
    n = _check_int("slides_per_center", slides_per_center, 1, "use e.g. 8 (3 for a quick run)")
    centers = list(centers) if centers is not None else default_centers(confounder)
    rows = []
    for style in centers:
        streams = _streams(int(seed), style.name, 0, kind=0)  # one per decision, reusing the stream names
        tumour_rng, biomarker_rng, tme_rng, split_rng = (
            streams[k] for k in ("hidden", "layout", "tumour", "glands")
        )
        tumour_order = tumour_rng.permutation(n)  # the same in the confounded and the control cohort
        has_tumour = np.zeros(n, bool)
        has_tumour[tumour_order[: int(math.floor(style.tumour_prevalence * n + 0.5))]] = True
        n_pos = n // 2 + (int(biomarker_rng.integers(2)) if n % 2 else 0)
        biomarker = np.zeros(n, int)
        biomarker[biomarker_rng.permutation(n)[:n_pos]] = 1
        z = tme_rng.standard_normal(n)
        if style.role == "external":
            splits = np.full(n, "external", dtype=object)
        else:
            splits = _assign_splits(split_rng, has_tumour)
        for i in range(n):
            rows.append(
                {
                    "slide_id": f"{style.name}-{i:03d}",
                    "patient_id": f"P-{style.name}-{i:03d}",
                    "center": style.name,
                    "index": i,
                    "split": splits[i],
                    "has_tumour": int(has_tumour[i]),
                    "biomarker": int(biomarker[i]),
                    "tme_score": round(tme_from_biomarker(biomarker[i], z[i]), 4),
                }
            )
    return pd.DataFrame(rows)


def _slide_files(out: Path, slide_id: str) -> dict[str, Path]:
    return {
        "path": out / "slides" / f"{slide_id}.tiff",
        "annotation": out / "annotations" / f"{slide_id}.xml",
        "nuclei": out / "nuclei" / f"{slide_id}.csv",
    }


def _write_slide(job: dict[str, Any]) -> dict[str, Any]:
    """Render one slide and write its nuclei table, annotation and TIFF (each atomically, TIFF last)."""
    from mtlutils.core.io import atomic_path, write_pyramidal_tiff
    from mtlutils.data.annotations import write_asap_xml

    slide = generate_slide(
        job["index"],
        job["center"],
        bool(job["has_tumour"]),
        job["biomarker"],
        job["tme_score"],
        job["size_px"],
        job["mpp"],
        job["seed"],
    )
    files = _slide_files(Path(job["out"]), slide.slide_id)
    with atomic_path(files["nuclei"]) as tmp:
        slide.nuclei.to_csv(tmp, index=False)
    write_asap_xml(files["annotation"], slide.polygons, group="Tumor")
    write_pyramidal_tiff(files["path"], slide.rgb, slide.mpp, tile=256)
    return {
        "slide_id": slide.slide_id,
        "tumour_fraction": slide.tumour_fraction,
        "tissue_fraction": slide.tissue_fraction,
        "n_nuclei": len(slide.nuclei),
    }


def _parameters(
    slides_per_center: int, size_px: int, mpp: float, seed: int, confounder: bool
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "slides_per_center": slides_per_center,
        "size_px": size_px,
        "mpp": mpp,
        "seed": seed,
        "confounder": confounder,
    }


def _check_same_cohort(out: Path, params: dict[str, Any]) -> None:
    """Refuse to resume into a folder holding a cohort made with other parameters."""
    for name in ("cohort.json", ".cohort-in-progress.json"):
        path = out / name
        if not path.exists():
            continue
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("parameters", {})
        except (OSError, ValueError):
            raise ValueError(
                f"{path} is unreadable; delete it (and the cohort files beside it) to regenerate"
            ) from None
        diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k}={a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            raise ValueError(
                f"{out} holds a cohort made with other parameters ({what}); use another out_dir or delete it"
            )


def _provenance(params: dict[str, Any], centers: Sequence[CenterStyle], plan: pd.DataFrame) -> dict[str, Any]:
    styles = {c.name: c for c in centers}
    slides = []
    for row in plan.itertuples(index=False):
        _, hidden = _slide_hidden(styles[row.center], int(row.index), int(params["seed"]))
        slides.append(
            {
                "slide_id": row.slide_id,
                "has_tumour": int(row.has_tumour),
                "biomarker": int(row.biomarker),
                "tme_score": float(row.tme_score),
                "grades": [round(g, 4) for g in hidden["grades"]] if row.has_tumour else [],
                "target_tumour_fraction": round(hidden["target_tumour_fraction"], 4)
                if row.has_tumour
                else 0.0,
                "stain_od": np.round(hidden["stain_od"], 5).tolist(),
                "stain_strength": round(hidden["stain_strength"], 5),
            }
        )
    return {
        "generator": "mtlutils.synthetic",
        "parameters": params,
        "centers": [c.to_dict() for c in centers],
        "model": {
            "nucleus_params": NUCLEUS_PARAMS,
            "normal_nucleus_params": {
                "activity_0": normal_nucleus_params(0.0),
                "activity_1": normal_nucleus_params(1.0),
            },
            "tumour_nucleus_params": {
                "grade_0": tumour_nucleus_params(0.0),
                "grade_1": tumour_nucleus_params(1.0),
            },
            "tumour_regions": "1, 2 or 3 per tumour slide (p 0.5 / 0.3 / 0.2), grade U(0, 1) each",
            "normal_activity": "U(0, 1) per duct and per lobule",
            "tumour_area_fraction": "0.10 + 0.5 * prevalence + U(-0.08, 0.08), clipped to [0.08, 0.7]",
            "tme_score": f"sigmoid({TME_SLOPE} * (biomarker - 0.5) + {TME_NOISE} * N(0, 1))",
            "lymphocytes_per_mm2_stroma": f"{LYMPH_BASE_PER_MM2} + {LYMPH_TME_PER_MM2} * tme_score",
            "stromal_nuclei_per_mm2": {
                "normal": STROMA_NUCLEI_PER_MM2,
                "tumour": TUMOUR_STROMA_NUCLEI_PER_MM2,
            },
            "split_fractions": SPLIT_FRACTIONS,
        },
        "slides": slides,
    }


def generate_cohort(
    out_dir: str | os.PathLike,
    slides_per_center: int = 8,
    size_px: int = 2048,
    mpp: float = 0.5,
    seed: int = 0,
    confounder: bool = True,
    workers: int = 1,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Write the synthetic cohort to ``out_dir``; return its manifest.

    Layout: ``slides/{slide_id}.tiff`` (pyramidal, OpenSlide-readable, level-0 ``mpp``),
    ``annotations/{slide_id}.xml`` (ASAP XML tumour polygons), ``nuclei/{slide_id}.csv`` (ground
    truth), ``manifest.csv`` (columns :data:`MANIFEST_COLUMNS`, paths relative to ``out_dir``) and
    ``cohort.json`` (parameters, center styles, every slide's hidden variables). Resumable: slides
    whose three files exist are skipped; manifest and cohort.json are written last. ``workers > 1``
    renders slides in a process pool (spawned, one thread per worker; in a script, call this under
    ``if __name__ == "__main__":``). The slides do not depend on ``workers``.
    """
    from mtlutils.core.io import atomic_path, atomic_write_json, ensure_writable_dir
    from mtlutils.core.progress import progress

    slides_per_center = _check_int(
        "slides_per_center", slides_per_center, 1, "use e.g. 8 (3 for a quick run)"
    )
    size_px = _check_int(
        "size_px", size_px, MIN_SLIDE_PX, f"a slide needs at least {MIN_SLIDE_PX} px (default 2048)"
    )
    mpp = _check_mpp(mpp)
    seed = _check_int("seed", seed, 0, "use a non-negative integer")
    workers = _check_int("workers", workers, 1, "use 1 (serial) or the number of cores")
    confounder = bool(confounder)
    out = ensure_writable_dir(out_dir)
    params = _parameters(slides_per_center, size_px, mpp, seed, confounder)
    _check_same_cohort(out, params)
    marker = out / ".cohort-in-progress.json"
    atomic_write_json(marker, {"parameters": params})
    for sub in ("slides", "annotations", "nuclei"):
        (out / sub).mkdir(exist_ok=True)

    centers = default_centers(confounder)
    styles = {c.name: c for c in centers}
    plan = plan_cohort(slides_per_center, seed, confounder, centers)
    jobs = [
        {
            "index": int(r.index),
            "center": styles[r.center],
            "has_tumour": int(r.has_tumour),
            "biomarker": int(r.biomarker),
            "tme_score": float(r.tme_score),
            "size_px": size_px,
            "mpp": mpp,
            "seed": seed,
            "out": str(out),
        }
        for r in plan.itertuples(index=False)
        if not all(p.exists() for p in _slide_files(out, r.slide_id).values())
    ]

    def track(items: Iterable[Any], total: int) -> Iterable[Any]:
        return progress(items, desc="synthetic slides", total=total) if show_progress else items

    if workers == 1 or len(jobs) <= 1:
        for job in track(jobs, len(jobs)):
            _write_slide(job)
    else:
        ctx = mp.get_context("spawn")
        try:
            with (
                child_threads(1),  # workers inherit one BLAS/OpenMP thread before numpy loads
                ProcessPoolExecutor(
                    max_workers=min(workers, len(jobs)),
                    mp_context=ctx,
                    initializer=set_threads,
                    initargs=(1,),
                ) as pool,
            ):
                futures = [pool.submit(_write_slide, job) for job in jobs]
                for fut in track(as_completed(futures), len(futures)):
                    fut.result()
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"generate_cohort: a worker process died ({exc}); in a script, call it under "
                "`if __name__ == '__main__':` (process pools re-import the script), or use workers=1; "
                "finished slides are kept and skipped on the next call"
            ) from None

    manifest = plan.drop(columns=["index"]).copy()
    files = [_slide_files(Path("."), s) for s in manifest["slide_id"]]
    for key in ("path", "annotation", "nuclei"):
        manifest[key] = [f[key].as_posix() for f in files]
    manifest["mpp"] = mpp
    manifest = manifest[list(MANIFEST_COLUMNS)]
    with atomic_path(out / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    atomic_write_json(out / "cohort.json", _provenance(params, centers, plan))
    marker.unlink(missing_ok=True)
    return manifest


# --------------------------------------------------------------------------------------------------
# Ground-truth concepts per patch
# --------------------------------------------------------------------------------------------------

GROUND_TRUTH_COLUMNS = ("n_nuclei", "count", "area", "area_cv", "intensity") + tuple(
    f"n_{kind}" for kind in NUCLEUS_TYPES
)


def patch_ground_truth(
    nuclei: pd.DataFrame,
    coords: pd.DataFrame | np.ndarray,
    tile_size_px: float,
    mpp: float,
    tissue_fraction: float | Sequence[float] | np.ndarray | None = None,
) -> pd.DataFrame:
    """The generator's true nuclei concepts of square patches of one slide, one row per patch.

    ``nuclei``: the slide's ground truth (``nuclei/{slide_id}.csv``: level-0 px centroids ``x_px``,
    ``y_px``, ``area_um2``, ``type``, ``intensity``). ``coords``: top-left corners in level-0 px
    (a frame with ``x_px``, ``y_px`` or an (N, 2) array of x, y). ``tile_size_px``: the patch side in
    level-0 px; ``mpp``: µm per level-0 px. A nucleus belongs to a patch when its centroid lies in
    [x, x + size) × [y, y + size).

    Columns: ``n_nuclei`` and ``n_<type>`` (nuclei per patch), ``count`` (nuclei per mm² of tissue),
    ``area`` (mean area, µm²), ``area_cv`` (SD / mean of the areas, ≥ 2 nuclei), ``intensity`` (mean
    relative hematoxylin load, stain-free). The tissue area is ``tissue_fraction`` × patch area:
    pass one fraction per patch (e.g. the ``tissue_fraction`` that :func:`mtlutils.concepts.patch_concepts`
    measured, which is the denominator of the measured ``count``, so the two counts differ only in
    the nuclei); ``None`` divides by the whole patch area. Undefined values are NaN.
    """
    missing = [c for c in ("x_px", "y_px", "area_um2", "type", "intensity") if c not in nuclei.columns]
    if missing:
        raise ValueError(
            f"nuclei table lacks column(s) {missing}; pass a nuclei/<slide_id>.csv written by generate_cohort"
        )
    if isinstance(coords, pd.DataFrame):
        if not {"x_px", "y_px"} <= set(coords.columns):
            raise ValueError("coords must have columns x_px, y_px (level-0 top-left corners of the patches)")
        corners = coords[["x_px", "y_px"]].to_numpy(dtype=np.float64)
    else:
        corners = np.asarray(coords, dtype=np.float64)
        if corners.ndim != 2 or corners.shape[1] != 2:
            raise ValueError(f"coords must be an (N, 2) array of x, y level-0 px, got shape {corners.shape}")
    size = float(tile_size_px)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"tile_size_px={tile_size_px!r} must be a positive number of level-0 px")
    mpp = float(mpp)
    if not (math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp={mpp!r} must be a positive number of µm per level-0 px")
    n_patches = len(corners)
    if tissue_fraction is None:
        fraction = np.ones(n_patches)
    else:
        fraction = np.broadcast_to(np.asarray(tissue_fraction, dtype=np.float64), (n_patches,)).copy()
        if np.any(fraction[np.isfinite(fraction)] < 0) or np.any(fraction > 1):
            raise ValueError(
                "tissue_fraction must lie in [0, 1] (a fraction of the patch area, not a percent)"
            )

    x = nuclei["x_px"].to_numpy(np.float64)
    y = nuclei["y_px"].to_numpy(np.float64)
    area = nuclei["area_um2"].to_numpy(np.float64)
    intensity = nuclei["intensity"].to_numpy(np.float64)
    kind = nuclei["type"].astype(str).to_numpy()
    n = np.zeros(n_patches, np.int64)
    sums = {name: np.zeros(n_patches) for name in ("area", "area2", "intensity")}
    by_type = {t: np.zeros(n_patches, np.int64) for t in NUCLEUS_TYPES}
    chunk = max(1, 4_000_000 // max(len(x), 1))  # bounded memory for the patch × nucleus membership
    for start in range(0, n_patches, chunk):
        cx, cy = corners[start : start + chunk, :1], corners[start : start + chunk, 1:]
        inside = (x >= cx) & (x < cx + size) & (y >= cy) & (y < cy + size)
        sl = slice(start, start + len(cx))
        n[sl] = inside.sum(axis=1)
        sums["area"][sl] = inside @ area
        sums["area2"][sl] = inside @ (area * area)
        sums["intensity"][sl] = inside @ intensity
        for t in NUCLEUS_TYPES:
            by_type[t][sl] = inside[:, kind == t].sum(axis=1)

    tissue_mm2 = fraction * (size * mpp) ** 2 * 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.where(tissue_mm2 > 0, n / tissue_mm2, np.nan)
        mean_area = np.where(n > 0, sums["area"] / np.maximum(n, 1), np.nan)
        var = (sums["area2"] - n * mean_area**2) / np.maximum(n - 1, 1)
        area_cv = np.where(n >= 2, np.sqrt(np.maximum(var, 0)) / mean_area, np.nan)
        mean_intensity = np.where(n > 0, sums["intensity"] / np.maximum(n, 1), np.nan)
    out = pd.DataFrame(
        {
            "n_nuclei": n,
            "count": count,
            "area": mean_area,
            "area_cv": area_cv,
            "intensity": mean_intensity,
            **{f"n_{t}": by_type[t] for t in NUCLEUS_TYPES},
        }
    )
    if isinstance(coords, pd.DataFrame):
        out.index = coords.index
    return out[list(GROUND_TRUTH_COLUMNS)]


def patch_dir_ground_truth(
    patch_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    tissue_fraction: Sequence[float] | np.ndarray | pd.Series | None = None,
    rows: Sequence[bool] | np.ndarray | pd.Series | None = None,
) -> pd.DataFrame:
    """:func:`patch_ground_truth` for every patch of a folder tiled from a synthetic cohort.

    Reads ``patch_dir/index.csv`` (level-0 corners, slide ``mpp``), each slide file's ``tile_size_px``
    attribute and ``cohort_dir/nuclei/{slide_id}.csv``. Returns one row per ``index.csv`` row (same
    order, with ``slide_id``, ``center``, ``split``) or, given the boolean mask ``rows``, per selected
    row. ``tissue_fraction``: one value per index row (e.g. ``concepts.csv``'s ``tissue_fraction``),
    or None for the whole patch area.
    """
    from mtlutils.core import io as mio

    folder, cohort = Path(patch_dir).expanduser(), Path(cohort_dir).expanduser()
    index_path = folder / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path} does not exist; tile the cohort first (notebook 01 or `mtlutils tile`)"
        )
    index = pd.read_csv(index_path, dtype={"slide_id": str, "center": str, "split": str, "file": str})
    fractions = None if tissue_fraction is None else np.asarray(tissue_fraction, dtype=np.float64)
    if fractions is not None and len(fractions) != len(index):
        raise ValueError(
            f"tissue_fraction has {len(fractions)} values for {len(index)} patches in {index_path}; "
            "pass concepts.csv's column for the same folder"
        )
    keep = np.ones(len(index), bool) if rows is None else np.asarray(rows, dtype=bool)
    if keep.shape != (len(index),):
        raise ValueError(
            f"rows must be a boolean mask of {len(index)} values (one per patch of {index_path})"
        )
    parts = []
    for (slide_id, file), group in index[keep].groupby(["slide_id", "file"], sort=False):
        attrs = mio.read_h5_attrs(folder / str(file))
        if "tile_size_px" not in attrs:
            raise ValueError(f"{folder / str(file)} has no tile_size_px attribute; tile the cohort again")
        truth = patch_ground_truth(
            read_nuclei(cohort, str(slide_id)),
            group,
            float(attrs["tile_size_px"]),
            float(group["mpp"].iloc[0]),
            None if fractions is None else fractions[group.index.to_numpy()],
        )
        parts.append(pd.concat([group[["slide_id", "center", "split"]], truth], axis=1))
    if not parts:
        raise ValueError(f"no patch selected from {index_path}; check the rows mask")
    return pd.concat(parts).sort_index()


def read_nuclei(cohort_dir: str | os.PathLike, slide_id: str) -> pd.DataFrame:
    """The ground-truth nuclei table of one slide of a cohort written by :func:`generate_cohort`."""
    path = Path(cohort_dir).expanduser() / "nuclei" / f"{slide_id}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no ground truth {path}: is {cohort_dir} the synthetic cohort (generate_cohort) slide {slide_id!r} came from?"
        )
    return pd.read_csv(path)


def nuclei_in_patch(
    nuclei: pd.DataFrame, x_px: float, y_px: float, tile_size_px: float, tile_px: int | None = None
) -> pd.DataFrame:
    """The nuclei whose centroid lies in the patch with level-0 top-left (x_px, y_px) and side
    ``tile_size_px``, with added ``patch_x``, ``patch_y``: the centroid in pixels of the patch image
    (``tile_px`` px wide; default ``tile_size_px``, i.e. a patch read at level 0 without resizing)."""
    size = float(tile_size_px)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"tile_size_px={tile_size_px!r} must be a positive number of level-0 px")
    scale = 1.0 if tile_px is None else float(tile_px) / size
    x, y = nuclei["x_px"].to_numpy(np.float64), nuclei["y_px"].to_numpy(np.float64)
    inside = (x >= x_px) & (x < x_px + size) & (y >= y_px) & (y < y_px + size)
    out = nuclei.loc[inside].copy()
    out["patch_x"] = (out["x_px"] - x_px) * scale
    out["patch_y"] = (out["y_px"] - y_px) * scale
    return out


def patch_dir_true_nuclei(
    patch_dir: str | os.PathLike, cohort_dir: str | os.PathLike, rows: Iterable[int]
) -> list[pd.DataFrame]:
    """:func:`nuclei_in_patch` for the patches at positions ``rows`` of ``patch_dir/index.csv`` (in
    that order): the true nuclei of each patch, centroids in patch-image pixels (for overlays)."""
    from mtlutils.core import io as mio

    folder = Path(patch_dir).expanduser()
    index_path = folder / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path} does not exist; tile the cohort first (notebook 01 or `mtlutils tile`)"
        )
    index = pd.read_csv(index_path, dtype={"slide_id": str, "file": str})
    tables: dict[str, pd.DataFrame] = {}
    out = []
    for position in rows:
        if not 0 <= int(position) < len(index):
            raise ValueError(f"row {position} is outside {index_path} ({len(index)} patches)")
        row = index.iloc[int(position)]
        if row["slide_id"] not in tables:
            tables[row["slide_id"]] = read_nuclei(cohort_dir, row["slide_id"])
        attrs = mio.read_h5_attrs(folder / row["file"])
        out.append(
            nuclei_in_patch(
                tables[row["slide_id"]],
                row["x_px"],
                row["y_px"],
                attrs["tile_size_px"],
                int(attrs["tile_px"]),
            )
        )
    return out
