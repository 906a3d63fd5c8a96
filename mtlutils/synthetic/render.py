"""The renderer: paints stroma, glands, tumour nests and nuclei, then mixes the stains into RGB."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, special
from scipy.spatial import cKDTree

from mtlutils.synthetic.centers import CenterStyle
from mtlutils.synthetic.fields import _hex_points, _lookup, _ramp, _smooth_field, _streaks, _texture
from mtlutils.synthetic.mimics import MIMIC_BACKGROUND, MIMIC_KINDS, _draw_mimics
from mtlutils.synthetic.model import (
    E_NUCLEUS,
    LYMPH_BASE_PER_MM2,
    LYMPH_IN_EPITHELIUM,
    LYMPH_MIN_GAP_UM,
    LYMPH_TME_PER_MM2,
    NUCLEI_COLUMNS,
    NUCLEUS_MIN_GAP_UM,
    NUCLEUS_PARAMS,
    NUCLEUS_TYPES,
    STROMA_NUCLEI_PER_MM2,
    TUMOUR_STROMA_NUCLEI_PER_MM2,
    tumour_nucleus_params,
)
from mtlutils.synthetic.nuclei import _Nuclei, _splat_nuclei
from mtlutils.synthetic.settings import DEFAULT_SETTINGS, GeneratorSettings
from mtlutils.synthetic.tissue import _draw_glands, _TumourRegion


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
    settings: GeneratorSettings | None = None,
    focus_blur_um: float = 0.0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Paint tissue compartments and nuclei, then mix the stains into RGB. Returns (rgb, nuclei table).

    ``settings``: difficulty options (default the original cohort); ``focus_blur_um``: extra blur σ.
    """
    settings = DEFAULT_SETTINGS if settings is None else settings
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
    glands, lumen = _draw_glands(
        rngs["glands"], rngs["gland_nuclei"], shape, mpp, tissue & ~tumour, nuclei, settings
    )
    epithelium = glands > 0
    mimic = _draw_mimics(
        rngs["mimics"], shape, mpp, tissue & ~tumour & ~epithelium & ~lumen, settings.mimics_per_mm2, nuclei
    )

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
        threshold = float(special.ndtri(1.0 - min(settings.tumour_epithelium + 0.3 * g, 0.95)))
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
    for kind in MIMIC_KINDS:
        stroma &= ~mimic[kind]

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
    for k, kind in enumerate(MIMIC_KINDS, start=6):  # follicle, histiocytes, crush
        compartment[mimic[kind]] = k
    grain2 = _texture(rngs["texture"], shape, 2.0 * um)
    tumour_cyto = (0.42, 0.12) if settings.shared_cytoplasm else (0.30, 0.20)
    e_base = np.array(
        [0.0, 0.0, 0.10, 0.42, tumour_cyto[0], 0.06, *(MIMIC_BACKGROUND[k][0] for k in MIMIC_KINDS)],
        np.float32,
    )
    e_grain = np.array([0.0, 0.0, 0.0, 0.04, 0.05, 0.05, 0.05, 0.05, 0.08], np.float32)
    e_collagen = np.array([0.0, 1.0, 0.75, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)
    h_base = np.array(
        [0.0, 0.04, 0.06, 0.12, tumour_cyto[1], 0.01, *(MIMIC_BACKGROUND[k][1] for k in MIMIC_KINDS)],
        np.float32,
    )
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

    rgb = _mix_stains(h_map, e_map, style, stain_od, strength, mpp, rngs["noise"], focus_blur_um)
    if style.jpeg_quality:
        rgb = _jpeg(rgb, style.jpeg_quality)
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
    focus_blur_um: float = 0.0,
) -> np.ndarray:
    """Beer–Lambert I = I0 · exp(-strength · (H h + E e)), then optical blur (the center's σ and a
    slide's defocus ``focus_blur_um`` added in quadrature) and sensor noise (uint8)."""
    out = np.empty((*h_map.shape, 3), np.uint8)
    sigma = math.hypot(style.blur_sigma_um, focus_blur_um) / mpp
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


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """``rgb`` after a JPEG round trip at ``quality`` (1..100; the scanner's compression)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
