"""Figures of notebook 04: tiles per bag, the critical-difference (mean rank) plot, t-SNE of embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from mtlutils.plotting import save_figure


def tile_counts(n_tiles: np.ndarray, cohort: np.ndarray, name: str | None = None):
    """Histogram of tiles per bag (patient), one colour per cohort."""
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    bins = np.arange(0, int(np.max(n_tiles)) + 3, 2)
    for c in dict.fromkeys(cohort):
        ax.hist(n_tiles[cohort == c], bins=bins, alpha=0.6, label=f"{c} (n={int((cohort == c).sum())})")
    ax.set_xlabel("tiles per patient (bag)")
    ax.set_ylabel("patients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def cd_plot(result: Mapping[str, Any], name: str | None = None, highlight: str = "baseline"):
    """Mean rank of each method over folds (1 = best) with the Nemenyi critical difference as a bar:
    methods whose ranks differ by less than CD are not distinguishable at that level."""
    ranks = result["mean_ranks"]
    methods = list(ranks)
    fig, ax = plt.subplots(figsize=(7.0, 0.9 + 0.28 * len(methods)))
    y = np.arange(len(methods))
    colours = ["tab:red" if m == highlight else "tab:blue" for m in methods]
    ax.scatter([ranks[m] for m in methods], y, c=colours, zorder=3)
    best = min(ranks.values())
    ax.axvspan(
        best, best + result["cd"], color="0.9", zorder=0, label=f"CD = {result['cd']:.2f} from the best"
    )
    ax.set_yticks(y, methods, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"mean rank over {result['n_folds']} folds (1 = best)")
    ax.set_title(f"Friedman p = {result['p_value']:.3g}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def tsne_panels(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], seed: int = 0, name: str | None = None):
    """t-SNE (2-d, seeded) of each panel's embeddings coloured by its 0/1 labels; titles carry the
    silhouette score of the full-dimensional embeddings."""
    from sklearn.manifold import TSNE

    from mtlutils.evaluation.probes import silhouette

    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), squeeze=False)
    for ax, (title, (emb, labels)) in zip(axes[0], panels.items()):
        xy = TSNE(2, perplexity=min(30.0, (len(emb) - 1) / 3), random_state=seed, init="pca").fit_transform(
            emb
        )
        for value, colour in ((0, "tab:blue"), (1, "tab:red")):
            m = labels == value
            ax.scatter(xy[m, 0], xy[m, 1], s=12, c=colour, label=f"biomarker {value}")
        ax.set_title(f"{title}\nsilhouette {silhouette(emb, labels.astype(int)):.3f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
