"""Optical-density maps of an RGB patch: hematoxylin by colour deconvolution, and the tissue mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mtlutils.concepts.params import DEFAULT_PARAMS, SegmentationParams, check_image, check_mpp
from mtlutils.data.stain import optical_density

# Ruifrok & Johnston stain vectors (rows: hematoxylin, eosin, residual/DAB), normalised.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
# Optical density of each 8-bit value, by the package's one definition: OD = ln(240 / (I + 1)), 0 from
# I = 239 up (mtlutils.data.stain.optical_density); a look-up table of it is equal by construction.
_OD_LUT = optical_density(np.arange(256, dtype=np.uint8)).astype(np.float32)
# Hematoxylin OD contributed by each 8-bit value of channel c: OD(I) × (HED_FROM_RGB)[c, H].
_H_LUTS = tuple((_OD_LUT.astype(np.float64) * _HED_FROM_RGB[c, 0]).astype(np.float32) for c in range(3))
# ... and by stain k (0 hematoxylin, 1 eosin, 2 residual)
_STAIN_LUTS = tuple(
    tuple((_OD_LUT.astype(np.float64) * _HED_FROM_RGB[c, k]).astype(np.float32) for c in range(3))
    for k in range(3)
)


def od_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hematoxylin OD, summed RGB OD, OD chroma = max − min over RGB), each (H, W) float32.

    Table look-ups only (no BLAS threads). The chroma is ~0 for white *and* for grey glass, which a
    summed optical density alone cannot tell from faint tissue.
    """
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    h = _H_LUTS[0][r] + _H_LUTS[1][g] + _H_LUTS[2][b]
    od_r, od_g, od_b = _OD_LUT[r], _OD_LUT[g], _OD_LUT[b]
    density = od_r + od_g + od_b
    chroma = np.maximum(np.maximum(od_r, od_g), od_b) - np.minimum(np.minimum(od_r, od_g), od_b)
    return h, density, chroma


def stain_od_unchecked(image: np.ndarray, stain: int) -> np.ndarray:
    """Optical density (H, W) float32 of stain 0 (hematoxylin), 1 (eosin) or 2 (residual) of a checked
    RGB uint8 image (Ruifrok unmixing)."""
    luts = _STAIN_LUTS[stain]
    return luts[0][image[..., 0]] + luts[1][image[..., 1]] + luts[2][image[..., 2]]


def hematoxylin_od(image: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density (H, W) float32 of an RGB uint8 image (Ruifrok H&E deconvolution)."""
    return od_maps(check_image(image))[0]


def tissue_from_od(
    density: np.ndarray, chroma: np.ndarray, mpp: float, params: SegmentationParams
) -> np.ndarray:
    """Tissue mask from the summed OD and the OD chroma, both smoothed by ``params.tissue_smooth_um``."""
    sigma = params.tissue_smooth_um / mpp
    if sigma > 0:
        density = ndi.gaussian_filter(density, sigma, truncate=3.0)
        chroma = ndi.gaussian_filter(chroma, sigma, truncate=3.0)
    return (density > params.tissue_od) & (chroma > params.tissue_chroma_od)


def tissue_mask(image: np.ndarray, mpp: float, params: SegmentationParams = DEFAULT_PARAMS) -> np.ndarray:
    """Boolean (H, W) tissue mask: smoothed summed optical density above ``params.tissue_od`` and
    smoothed OD chroma above ``params.tissue_chroma_od`` (stained, not white or grey glass)."""
    image = check_image(image)
    _, density, chroma = od_maps(image)
    return tissue_from_od(density, chroma, check_mpp(mpp, params), params)
