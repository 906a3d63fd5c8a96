"""Tissue detection on a slide thumbnail: :class:`TissueMask` and :func:`detect_tissue`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtlutils.data.units import check_mpp
from mtlutils.data.wsi import Slide

__all__ = ["TissueMask", "detect_tissue"]


@dataclass
class TissueMask:
    """Tissue mask of a slide at low resolution.

    ``mask``: bool (rows, cols); ``thumbnail``: RGB uint8 of the same size; ``downsample``: level-0 px
    per mask px (x, y); ``mpp``: µm per mask px; ``threshold``: the saturation (or grey) threshold used.
    """

    mask: np.ndarray
    thumbnail: np.ndarray
    downsample: tuple[float, float]
    mpp: float
    threshold: float
    method: str
    _integral: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def tissue_area_mm2(self) -> float:
        """Tissue area in mm²."""
        return float(self.mask.sum()) * self.mpp**2 / 1e6

    def fraction(
        self, x_px: np.ndarray, y_px: np.ndarray, width_px: float, height_px: float | None = None
    ) -> np.ndarray:
        """Area-weighted tissue fraction (0–1) of boxes with top-left (x_px, y_px) in level-0 px."""
        from scipy.ndimage import map_coordinates

        if self._integral is None:
            integral = np.zeros((self.mask.shape[0] + 1, self.mask.shape[1] + 1), dtype=np.float64)
            integral[1:, 1:] = self.mask.astype(np.float64).cumsum(0).cumsum(1)
            self._integral = integral
        height_px = width_px if height_px is None else height_px
        dx, dy = self.downsample
        rows, cols = self.mask.shape
        x0 = np.clip(np.asarray(x_px, dtype=float) / dx, 0, cols)
        x1 = np.clip((np.asarray(x_px, dtype=float) + width_px) / dx, 0, cols)
        y0 = np.clip(np.asarray(y_px, dtype=float) / dy, 0, rows)
        y1 = np.clip((np.asarray(y_px, dtype=float) + height_px) / dy, 0, rows)

        def cum(y: np.ndarray, x: np.ndarray) -> np.ndarray:
            # the continuous integral of a piecewise-constant mask is bilinear inside each cell
            return map_coordinates(self._integral, [y, x], order=1, mode="nearest")

        area = cum(y1, x1) - cum(y0, x1) - cum(y1, x0) + cum(y0, x0)
        full = (width_px / dx) * (height_px / dy)
        return np.clip(area / full, 0.0, 1.0)

    def overlay(self, color: tuple[int, int, int] = (0, 158, 115), width: int = 1) -> np.ndarray:
        """Thumbnail with the tissue mask's outline drawn in ``color`` (Okabe-Ito bluish green), ``width``
        px thick: the stain inside stays visible, unlike a tint (for quality-control pictures)."""
        from scipy import ndimage as ndi

        out = self.thumbnail.copy()
        mask = self.mask.astype(bool)
        edge = mask & ~ndi.binary_erosion(mask, iterations=max(1, int(width)), border_value=0)
        out[edge] = np.asarray(color, dtype=np.uint8)
        return out


def _remove_small(mask: np.ndarray, max_px: int) -> np.ndarray:
    """Drop 8-connected components of ``mask`` with at most ``max_px`` pixels."""
    from skimage.morphology import remove_small_objects

    if max_px <= 0 or not mask.any():
        return mask
    try:
        return remove_small_objects(mask, max_size=max_px, connectivity=2)
    except TypeError:  # scikit-image < 0.26 has only min_size (removes sizes strictly below it)
        return remove_small_objects(mask, min_size=max_px + 1, connectivity=2)


def detect_tissue(
    slide: Slide,
    mask_mpp: float = 8.0,
    method: str = "saturation",
    min_saturation: float = 0.07,
    close_um: float = 16.0,
    min_object_um2: float = 1e4,
    min_hole_um2: float = 1e4,
) -> TissueMask:
    """Tissue mask from a thumbnail at ≈ ``mask_mpp`` µm/px.

    ``method="saturation"``: HSV saturation above max(Otsu threshold, ``min_saturation``) — robust to
    white/grey background and to black out-of-scan areas; the floor keeps a slide that is only
    background (where Otsu would split sensor noise) free of "tissue". ``method="grey"``: grey level below Otsu
    (and below 0.9, so an all-white slide has no tissue). Then a closing with a disk of radius
    ``close_um``, removal of objects and holes smaller than ``min_object_um2`` / ``min_hole_um2`` µm².
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    if method not in {"saturation", "grey"}:
        raise ValueError(f"detect_tissue: method={method!r} must be 'saturation' or 'grey'")
    check_mpp(
        mask_mpp, lo=0.0, hi=float("inf"), what="detect_tissue: mask_mpp", fix="use e.g. 8 µm per pixel"
    )
    downsample = max(1.0, mask_mpp / slide.mpp)
    thumb = slide.read_scaled(downsample)
    dx, dy = slide.dimensions[0] / thumb.shape[1], slide.dimensions[1] / thumb.shape[0]
    px_mpp = slide.mpp * dx
    rgb = thumb.astype(np.float32) / 255.0
    if method == "saturation":
        vmax, vmin = rgb.max(axis=2), rgb.min(axis=2)
        value = np.where(vmax > 0, (vmax - vmin) / np.maximum(vmax, 1e-6), 0.0)
        otsu = threshold_otsu(value) if np.ptp(value) > 1e-6 else 1.0
        threshold = max(float(otsu), min_saturation)
        mask = value > threshold
    else:
        value = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        otsu = threshold_otsu(value) if np.ptp(value) > 1e-6 else 0.0
        threshold = min(float(otsu), 0.9)
        mask = value < threshold
    radius = max(1, round(close_um / px_mpp))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    padded = np.pad(mask, radius)
    mask = ndimage.binary_closing(padded, structure=disk)[radius:-radius, radius:-radius]
    mask = ~_remove_small(~mask, int(min_hole_um2 / px_mpp**2))
    mask = _remove_small(mask, int(min_object_um2 / px_mpp**2))
    return TissueMask(
        mask=mask, thumbnail=thumb, downsample=(dx, dy), mpp=px_mpp, threshold=threshold, method=method
    )
