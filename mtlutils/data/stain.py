"""Stain normalisation of H&E patches (Reinhard, Macenko via ``torchstain``'s NumPy backend).

Paper A normalises every patch with Reinhard's method towards one reference patch. Two practical
problems are handled here rather than left to crash a long run:

* background / blank tiles (few stained pixels, i.e. optical density ≥ ``beta`` in some channel):
  Reinhard would turn white into the target's pink, and Macenko has no pixels to fit. Macenko also
  needs pixels dense in *every* channel (its own selection); with fewer than 1 % of them (or 100
  pixels) its stain vectors are noise, so it falls back too;
* numerical failures (Macenko's ``LinAlgError`` or empty percentiles, any NaN/inf on the way,
  e.g. Reinhard on a tile with zero colour variance).

Both fall back to returning the tile unchanged (identity), and the number of fallbacks is counted.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "METHODS",
    "StainNormalizer",
    "optical_density",
    "tissue_pixel_fraction",
    "normalize_patches",
    "stain_statistics",
    "time_normalizers",
    "NormalisationComparison",
    "compare_normalisation",
]

METHODS = ("reinhard", "macenko")
#: Transmitted-light intensity (white level) used for optical density, as in Macenko's method.
IO_WHITE = 240
#: Optical density below which a channel counts as background (Macenko's beta).
OD_BETA = 0.15
#: Macenko needs at least this many / this fraction of pixels dense in every channel.
MACENKO_MIN_PIXELS = 100
MACENKO_MIN_FRACTION = 0.01
MIN_LAB_STD = 0.5  #: CIELAB units (L 0-255 scale); a tile varying less than this in L, a or b is left as is


def optical_density(rgb: np.ndarray, io: float = IO_WHITE) -> np.ndarray:
    """Optical density OD = ln(io / (I + 1)) per pixel and channel (float32, same shape as ``rgb``).

    ``io`` is the white level (light through bare glass); a channel at or above it is clear glass, OD 0
    (never negative: no stain absorbs less than none).
    """
    return np.maximum(-np.log((rgb.astype(np.float32) + 1.0) / io), np.float32(0.0))


def tissue_pixel_fraction(rgb: np.ndarray, beta: float = OD_BETA) -> float:
    """Fraction of stained pixels: optical density ≥ ``beta`` in at least one channel."""
    od = optical_density(rgb)
    return float(np.any(od >= beta, axis=-1).mean())


def _macenko_pixel_count(rgb: np.ndarray, beta: float = OD_BETA) -> int:
    """Pixels Macenko's method fits on: optical density ≥ ``beta`` in every channel."""
    return int(np.all(optical_density(rgb) >= beta, axis=-1).sum())


def _macenko_ready(rgb: np.ndarray) -> bool:
    n_pixels = rgb.shape[0] * rgb.shape[1]
    return _macenko_pixel_count(rgb) >= max(MACENKO_MIN_PIXELS, MACENKO_MIN_FRACTION * n_pixels)


class StainFitError(ValueError):
    """The target image cannot be used to fit a stain normaliser."""


@dataclass
class StainNormalizer:
    """``StainNormalizer("reinhard" | "macenko").fit(target_rgb).transform(rgb)``.

    ``min_tissue``: tiles with a smaller stained-pixel fraction (see :func:`tissue_pixel_fraction`) are
    returned unchanged; :attr:`n_fallback` counts every identity fallback since the last :meth:`fit`.
    """

    method: str = "reinhard"
    min_tissue: float = 0.05
    n_fallback: int = field(default=0, init=False)
    _impl: object | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"stain method {self.method!r} is not one of {METHODS}")

    def fit(self, target_rgb: np.ndarray) -> StainNormalizer:
        """Fit to a reference image (H, W, 3) uint8 with tissue; returns ``self``."""
        from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

        target = _check_rgb(target_rgb, "target")
        fraction = tissue_pixel_fraction(target)
        if fraction < self.min_tissue or (self.method == "macenko" and not _macenko_ready(target)):
            raise StainFitError(
                f"stain target has only {fraction:.1%} stained pixels (< min_tissue={self.min_tissue:.0%}); choose a target patch with tissue"
            )
        impl = NumpyReinhardNormalizer() if self.method == "reinhard" else NumpyMacenkoNormalizer()
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                impl.fit(target)
        except (np.linalg.LinAlgError, ValueError, IndexError, RuntimeError) as exc:
            raise StainFitError(
                f"{self.method} could not be fitted to the stain target ({exc}); choose another target patch"
            ) from None
        self._impl = impl
        self.n_fallback = 0
        return self

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """Normalised copy of one image (H, W, 3) uint8; identity (counted) for blank tiles or failures."""
        if self._impl is None:
            raise ValueError("StainNormalizer.transform called before fit(target_rgb)")
        image = _check_rgb(rgb, "image")
        if tissue_pixel_fraction(image) < self.min_tissue or (
            self.method == "macenko" and not _macenko_ready(image)
        ):
            self.n_fallback += 1
            return image.copy()
        if _lab_std_min(image) < MIN_LAB_STD:
            # Reinhard divides by the tile's LAB standard deviations and Macenko takes eigenvectors of its
            # OD covariance: a flat tile has neither (its std is 0 on one CPU and ~1e-7 on another), so it
            # is returned unchanged instead of relying on a NaN that only some CPUs produce
            self.n_fallback += 1
            return image.copy()
        try:
            # NaN/inf anywhere (e.g. a zero standard deviation, an empty percentile) raises instead of
            # being cast silently to black pixels
            with (
                np.errstate(divide="raise", invalid="raise", over="ignore", under="ignore"),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("error", RuntimeWarning)
                if self.method == "reinhard":
                    out = self._impl.normalize(image)
                else:
                    out, _, _ = self._impl.normalize(image, stains=False)
        except (
            np.linalg.LinAlgError,
            ValueError,
            IndexError,
            RuntimeError,
            RuntimeWarning,
            FloatingPointError,
        ):
            self.n_fallback += 1
            return image.copy()
        out = np.asarray(out)
        if out.shape != image.shape:
            self.n_fallback += 1
            return image.copy()
        return out.astype(np.uint8, copy=False)


def _lab_std_min(rgb: np.ndarray) -> float:
    """Smallest per-channel standard deviation of ``rgb`` in CIELAB units, computed as torchstain's Reinhard does."""
    from torchstain.numpy.utils.rgb2lab import rgb2lab

    lab = rgb2lab(rgb.astype(np.float32) / 255)
    return float(lab.reshape(-1, 3).std(axis=0).min())


def _check_rgb(rgb: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"stain {what} must be an (H, W, 3) uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}"
        )
    return arr


def normalize_patches(
    images: np.ndarray, method: str = "reinhard", target: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Normalise a stack of patches (N, H, W, 3) uint8 towards ``target``; return ``(images, n_fallback)``.

    ``target``: the reference image; ``None`` uses the patch with the largest stained-pixel fraction
    (state that choice when you report results). ``method``: ``"reinhard"``, ``"macenko"`` or
    ``"none"`` (returns a copy, 0 fallbacks).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"normalize_patches: images must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}"
        )
    if method == "none":
        return images.copy(), 0
    if len(images) == 0:
        return images.copy(), 0
    if target is None:
        target = images[int(np.argmax([tissue_pixel_fraction(im) for im in images]))]
    normalizer = StainNormalizer(method).fit(target)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = normalizer.transform(image)
    return out, normalizer.n_fallback


def stain_statistics(images: np.ndarray, beta: float = OD_BETA) -> pd.DataFrame:
    """Per-image stain statistics, for comparing centers before and after normalisation.

    Columns: ``tissue_fraction`` (stained-pixel fraction: OD ≥ ``beta`` in some channel);
    ``od_r, od_g, od_b``: mean optical density over stained pixels (NaN without any);
    ``L_mean, a_mean, b_mean, L_std, a_std, b_std``: CIELAB (L in 0–100) over all pixels — the
    statistics Reinhard's method matches.
    """
    from skimage.color import rgb2lab

    rows = []
    for image in np.asarray(images):
        od = optical_density(image)
        stained = np.any(od >= beta, axis=-1)
        row = {"tissue_fraction": float(stained.mean())}
        if stained.any():
            od_mean = od[stained].mean(axis=0)
            row.update({"od_r": float(od_mean[0]), "od_g": float(od_mean[1]), "od_b": float(od_mean[2])})
        lab = rgb2lab(image).reshape(-1, 3)
        for k, name in enumerate(("L", "a", "b")):
            row[f"{name}_mean"] = float(lab[:, k].mean())
            row[f"{name}_std"] = float(lab[:, k].std())
        rows.append(row)
    columns = [
        "tissue_fraction",
        "od_r",
        "od_g",
        "od_b",
        "L_mean",
        "a_mean",
        "b_mean",
        "L_std",
        "a_std",
        "b_std",
    ]
    return pd.DataFrame(rows).reindex(columns=columns).astype(float)


def time_normalizers(
    images: np.ndarray, target: np.ndarray | None = None, repeats: int = 1
) -> dict[str, float]:
    """Milliseconds per tile of each method on ``images`` (for benchmarks and the README)."""
    result = {}
    for method in METHODS:
        start = time.perf_counter()
        for _ in range(repeats):
            normalize_patches(images, method, target)
        result[f"{method}_ms_per_tile"] = 1000 * (time.perf_counter() - start) / (repeats * len(images))
    return result


@dataclass
class NormalisationComparison:
    """The same patches under several normalisation methods, with their stain statistics.

    ``images[method]``: (N, H, W, 3) uint8; ``statistics``: :func:`stain_statistics` rows for every
    method and patch, with columns ``method`` and ``group``; ``fallbacks[method]``: tiles left unchanged.
    """

    methods: tuple[str, ...]
    images: dict[str, np.ndarray]
    statistics: pd.DataFrame
    fallbacks: dict[str, int]

    def center_spread(self, columns: tuple[str, ...] = ("a_mean", "b_mean")) -> pd.DataFrame:
        """Per method: mean Euclidean distance between the groups' mean ``columns`` (CIELAB units)."""
        rows = {}
        for method, stats in self.statistics.groupby("method", sort=False):
            centers = stats.groupby("group")[list(columns)].mean().to_numpy()
            diffs = centers[:, None, :] - centers[None, :, :]
            dist = np.sqrt((diffs**2).sum(-1))[np.triu_indices(len(centers), k=1)]
            rows[method] = {"mean_distance": float(dist.mean()) if dist.size else float("nan")}
        return pd.DataFrame.from_dict(rows, orient="index").loc[list(self.methods)]


def compare_normalisation(
    images: np.ndarray,
    target: np.ndarray,
    groups: np.ndarray,
    methods: tuple[str, ...] = ("none", "reinhard", "macenko"),
) -> NormalisationComparison:
    """Normalise ``images`` toward ``target`` with each method and compute their stain statistics.

    ``groups``: one label per image (e.g. its center) kept in the statistics table for plotting.
    """
    groups = np.asarray(groups)
    if len(groups) != len(images):
        raise ValueError(
            f"compare_normalisation: {len(groups)} groups for {len(images)} images; give one per image"
        )
    normalised, fallbacks, tables = {}, {}, []
    for method in methods:
        normalised[method], fallbacks[method] = normalize_patches(images, method, target)
        stats = stain_statistics(normalised[method])
        stats.insert(0, "group", groups)
        stats.insert(0, "method", method)
        tables.append(stats)
    return NormalisationComparison(
        tuple(methods), normalised, pd.concat(tables, ignore_index=True), fallbacks
    )
