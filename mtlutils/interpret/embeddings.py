"""Seeded 2-d maps of a layer (UMAP, t-SNE) and silhouettes of its groups."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mtlutils.evaluation.probes import silhouette

UMAP_NEIGHBOURS, UMAP_MIN_DIST = 15, 0.1  #: paper A's UMAP settings


def standardised(x) -> np.ndarray:
    """Columns z-scored (constant columns left at 0): every unit weighs the same in the distances."""
    x = np.asarray(x, dtype=float)
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 1e-12, sd, 1.0)


def umap_map(
    x, seed: int = 0, n_neighbors: int = UMAP_NEIGHBOURS, min_dist: float = UMAP_MIN_DIST
) -> np.ndarray:
    """(n, 2) UMAP of standardised ``x``, seeded (single-threaded, hence reproducible)."""
    import warnings

    import umap

    x = standardised(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba notices
        reducer = umap.UMAP(
            n_neighbors=min(n_neighbors, x.shape[0] - 1), min_dist=min_dist, random_state=seed
        )
        return reducer.fit_transform(x)


def tsne_map(x, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """(n, 2) t-SNE of standardised ``x``, seeded (PCA initialisation)."""
    from sklearn.manifold import TSNE

    x = standardised(x)
    return TSNE(
        2, perplexity=min(perplexity, (x.shape[0] - 1) / 3), init="pca", random_state=seed
    ).fit_transform(x)


def silhouettes(x, groupings: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Silhouette of standardised ``x`` (the layer itself, not its 2-d map) per grouping, e.g.
    {"class": labels, "center": centers}; NaN where a grouping has fewer than two values."""
    z = standardised(x)
    return {
        name: silhouette(z, g, seed=seed) if np.unique(np.asarray(g)).size >= 2 else float("nan")
        for name, g in groupings.items()
    }


def map_panels(
    maps: Mapping[str, np.ndarray], classes, centers, name: str | None = None, title: str = "UMAP"
):
    """One panel per model's 2-d map: colour = class, marker = center; saved as ``name``."""
    import matplotlib.pyplot as plt

    from mtlutils.plotting import panel_grid, save_figure

    classes, centers = np.asarray(classes), np.asarray(centers).astype(str)
    markers = dict(zip(np.unique(centers), "osD^vP*X", strict=False))
    colours = dict(zip(np.unique(classes), plt.get_cmap("tab10").colors, strict=False))
    fig, axes = panel_grid(len(maps), ncols=3, size=3.6)
    for ax, (label, xy) in zip(axes, maps.items(), strict=True):
        for c in colours:
            for m in markers:
                rows = (classes == c) & (centers == m)
                ax.scatter(
                    *xy[rows].T,
                    s=14,
                    alpha=0.8,
                    color=colours[c],
                    marker=markers[m],
                    label=f"class {c:g} · center {m}"
                    if isinstance(c, (int, float, np.number))
                    else f"{c} · {m}",
                )
        ax.set(title=f"{title}: {label}", xticks=[], yticks=[])
    axes[-1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    save_figure(fig, name)
    return fig
