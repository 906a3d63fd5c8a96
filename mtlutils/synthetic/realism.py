"""Realism you can see: optical-density histograms and texture of synthetic tiles beside real ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: bin edges of the optical-density histograms (natural-log OD units)
OD_BINS = np.linspace(0.0, 2.5, 51)
CHANNELS = ("r", "g", "b")
#: per-tile statistics: mean and sd of the tissue pixels' OD per channel, GLCM contrast and homogeneity
TILE_STATISTICS = (
    *(f"od_mean_{c}" for c in CHANNELS),
    *(f"od_sd_{c}" for c in CHANNELS),
    "glcm_contrast",
    "glcm_homogeneity",
)

Tiles = np.ndarray | Sequence[np.ndarray]


def _as_list(tiles: Tiles) -> list[np.ndarray]:
    """The RGB tiles as a list of (H, W, 3) uint8 arrays (tiles of one set may differ in size)."""
    out = [np.asarray(t) for t in tiles]
    if not out:
        raise ValueError("realism: a set of tiles is empty; pass at least one (H, W, 3) RGB tile")
    for t in out:
        if t.ndim != 3 or t.shape[2] != 3:
            raise ValueError(f"realism: tiles must be (H, W, 3) RGB arrays, got shape {t.shape}")
    return out


def tissue_od(tile: np.ndarray, io: float = 240.0, min_od: float = 0.15) -> np.ndarray:
    """Optical density (n, 3) of the tissue pixels of one RGB tile: those whose OD summed over the
    channels is at least ``min_od`` (the rest is glass). OD is :func:`mtlutils.data.stain.optical_density`
    with white level ``io`` (0..255)."""
    from mtlutils.data.stain import optical_density

    od = optical_density(np.asarray(tile), io=io).reshape(-1, 3).astype(np.float64)
    return od[od.sum(axis=1) >= min_od]


def pooled_od(
    tiles: Tiles, io: float = 240.0, min_od: float = 0.15, max_pixels: int = 200_000, seed: int = 0
) -> np.ndarray:
    """The tissue pixels' OD (n, 3) of a whole set, a seeded subsample of at most ``max_pixels``."""
    od = np.concatenate([tissue_od(t, io, min_od) for t in _as_list(tiles)])
    if len(od) > max_pixels:
        od = od[np.random.default_rng(seed).choice(len(od), max_pixels, replace=False)]
    return od


def od_histograms(
    tiles: Tiles, bins: np.ndarray = OD_BINS, io: float = 240.0, min_od: float = 0.15
) -> np.ndarray:
    """Normalised OD histograms (3, len(bins) - 1) of the set's tissue pixels, one row per channel
    R, G, B; each row sums to 1 (values beyond the last edge go into the last bin)."""
    od = pooled_od(tiles, io, min_od, max_pixels=10**9)
    clipped = np.clip(od, bins[0], bins[-1])
    hist = np.stack([np.histogram(clipped[:, c], bins=bins)[0] for c in range(3)]).astype(np.float64)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1.0)


def texture_statistics(
    tiles: Tiles, io: float = 240.0, min_od: float = 0.15, levels: int = 32
) -> pd.DataFrame:
    """Per tile: mean and sd of its tissue pixels' OD per channel, and the grey image's GLCM contrast
    (grey levels², ``levels`` levels, neighbours 1 px apart, mean over 0° and 90°) and homogeneity.
    GLCM figures depend on the resolution: compare tiles at the same µm/px."""
    from skimage.feature import graycomatrix, graycoprops

    rows = []
    for tile in _as_list(tiles):
        od = tissue_od(tile, io, min_od)
        mean = od.mean(axis=0) if len(od) else np.full(3, np.nan)
        sd = od.std(axis=0) if len(od) else np.full(3, np.nan)
        grey = np.asarray(tile, dtype=np.float64).mean(axis=2)
        quantised = np.clip(grey * levels / 256.0, 0, levels - 1).astype(np.uint8)
        glcm = graycomatrix(quantised, [1], [0.0, np.pi / 2], levels=levels, symmetric=True, normed=True)
        texture = [graycoprops(glcm, p).mean() for p in ("contrast", "homogeneity")]
        rows.append([*mean, *sd, *texture])
    return pd.DataFrame(rows, columns=list(TILE_STATISTICS))


def _intersection(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """Histogram intersection (0: disjoint .. 1: identical) of two samples on shared bins."""
    ha = np.histogram(np.clip(a, bins[0], bins[-1]), bins=bins)[0].astype(np.float64)
    hb = np.histogram(np.clip(b, bins[0], bins[-1]), bins=bins)[0].astype(np.float64)
    return float(np.minimum(ha / max(ha.sum(), 1.0), hb / max(hb.sum(), 1.0)).sum())


def compare_tiles(
    first: Tiles,
    second: Tiles,
    names: tuple[str, str] = ("synthetic", "real"),
    io: float = 240.0,
    min_od: float = 0.15,
    max_pixels: int = 200_000,
    seed: int = 0,
) -> pd.DataFrame:
    """How far two sets of RGB tiles (same µm/px) are apart, one row per measure.

    Rows ``od_r, od_g, od_b``: the tissue pixels' OD per channel (pooled over the set, subsampled to
    ``max_pixels``); then the per-tile :data:`TILE_STATISTICS`. Columns: the mean of the measure in
    each set (named by ``names``), ``wasserstein`` (1-D Wasserstein distance between the two sets'
    distributions, in the measure's units: OD, or grey levels² for the contrast; 0 for identical
    sets), ``wasserstein_per_sd`` (the same divided by the sd of the second set: scale-free) and
    ``intersection`` (histogram intersection of the OD rows on :data:`OD_BINS`, 1 for identical sets;
    NaN for the per-tile rows, too few values for a histogram).
    """
    from scipy.stats import wasserstein_distance

    if (
        len(names) != 2
        or names[0] == names[1]
        or set(names) & {"wasserstein", "wasserstein_per_sd", "intersection"}
    ):
        raise ValueError(f"compare_tiles(): names={names} must be two different set names")
    od = [pooled_od(t, io, min_od, max_pixels, seed) for t in (first, second)]
    stats = [texture_statistics(t, io, min_od) for t in (first, second)]
    rows: dict[str, list[float]] = {}
    for c, channel in enumerate(CHANNELS):
        a, b = od[0][:, c], od[1][:, c]
        w = float(wasserstein_distance(a, b))
        rows[f"od_{channel}"] = [a.mean(), b.mean(), w, w / max(b.std(), 1e-12), _intersection(a, b, OD_BINS)]
    for column in TILE_STATISTICS:
        a, b = (s[column].dropna().to_numpy() for s in stats)
        w = float(wasserstein_distance(a, b)) if len(a) and len(b) else float("nan")
        rows[column] = [
            a.mean(),
            b.mean(),
            w,
            w / max(b.std(), 1e-12) if len(b) > 1 else float("nan"),
            np.nan,
        ]
    table = pd.DataFrame.from_dict(
        rows, orient="index", columns=[*names, "wasserstein", "wasserstein_per_sd", "intersection"]
    )
    table.index.name = "measure"
    return table


def plot_od_histograms(sets: Mapping[str, Tiles], name: str | None = None, io: float = 240.0) -> Any:
    """One panel per channel (R, G, B): the OD histogram of each named set's tissue pixels."""
    import matplotlib.pyplot as plt

    from mtlutils.plotting import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.0), sharey=True)
    centres = 0.5 * (OD_BINS[1:] + OD_BINS[:-1])
    for label, tiles in sets.items():
        hist = od_histograms(tiles, io=io)
        for c, ax in enumerate(axes):
            ax.plot(centres, hist[c], label=label)
    for c, ax in enumerate(axes):
        ax.set_title(f"optical density, {'RGB'[c]} channel", fontsize=9)
        ax.set_xlabel("OD (ln)")
    axes[0].set_ylabel("share of tissue pixels")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def read_tiles(
    paths: Sequence[str], mpp: float, target_mpp: float, n: int | None = None, seed: int = 0
) -> list[np.ndarray]:
    """RGB tiles from image files (PNG/JPEG) scanned at ``mpp`` µm/px, resized to ``target_mpp``
    (e.g. 40x crops at 0.25 µm/px to the 0.5 µm/px of the patches); a seeded sample of ``n`` files
    (all when None)."""
    from PIL import Image

    paths = [str(p) for p in paths]
    if n is not None and n < len(paths):
        paths = [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), n, replace=False))]
    scale = float(mpp) / float(target_mpp)
    tiles = []
    for path in paths:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
            tiles.append(np.asarray(rgb.resize(size, Image.Resampling.LANCZOS)))
    return tiles
