"""Figures for the notebooks: image montages, slide overlays, distributions by group.

Every function returns the matplotlib ``Figure`` and, when the runner set a run folder, saves it there
as ``figures/<name>.png`` through :func:`save_figure` (so a batch run keeps the pictures).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

RUN_DIR_ENV = "MTLUTILS_RUN_DIR"
CENTER_PALETTE = "tab10"


def save_figure(fig: matplotlib.figure.Figure, name: str | None) -> Path | None:
    """Save ``fig`` as ``<run dir>/figures/<name>.png`` when running under the runner; return the path."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not (run_dir and name):
        return None
    path = Path(run_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    size: float = 2.0,
    name: str | None = None,
    suptitle: str | None = None,
) -> matplotlib.figure.Figure:
    """Show RGB (or grey) images in a grid, ``size`` inches per panel."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid(): no images to show; check the selection that produced them")
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.ravel()[i]
        ax.imshow(img, cmap=None if np.ndim(img) == 3 else "gray")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def tile_overlay(
    thumbnail: np.ndarray,
    mask: np.ndarray | None,
    coords: pd.DataFrame,
    tile_size_level0: float,
    thumb_downsample: float,
    label_column: str = "label",
    polygons: Sequence[np.ndarray] = (),
    ax: matplotlib.axes.Axes | None = None,
    title: str = "",
) -> matplotlib.axes.Axes:
    """Draw a slide thumbnail, its tissue mask (contour), tumour polygons and the kept tile grid.

    ``coords`` has level-0 ``x_px, y_px`` (top-left corners); tiles coloured by ``label_column``
    (red tumour, green normal). ``thumb_downsample`` = level-0 px per thumbnail px.
    """
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(thumbnail)
    if mask is not None:
        extent = (-0.5, thumbnail.shape[1] - 0.5, thumbnail.shape[0] - 0.5, -0.5)
        ax.contour(
            np.asarray(mask, float),
            levels=[0.5],
            colors="royalblue",
            linewidths=0.8,
            extent=extent,
            origin="upper",
        )
    side = tile_size_level0 / thumb_downsample
    for x, y, lab in zip(
        coords["x_px"], coords["y_px"], coords.get(label_column, pd.Series(0, index=coords.index))
    ):
        colour = "red" if lab == 1 else "limegreen"
        ax.add_patch(
            Rectangle(
                (x / thumb_downsample, y / thumb_downsample), side, side, fill=False, lw=0.5, edgecolor=colour
            )
        )
    for poly in polygons:
        p = np.asarray(poly) / thumb_downsample
        ax.plot(np.r_[p[:, 0], p[:1, 0]], np.r_[p[:, 1], p[:1, 1]], color="black", lw=1, ls="--")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return ax


def panel_grid(n: int, ncols: int = 4, size: float = 3.2) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    """An ``n``-panel figure (axes flattened; unused panels hidden)."""
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()[:n]


def distributions_by_group(
    df: pd.DataFrame,
    columns: Sequence[str],
    group: str,
    hue: str | None = None,
    name: str | None = None,
    ncols: int = 4,
) -> matplotlib.figure.Figure:
    """Box plots of each column in ``columns`` split by ``group`` (and ``hue``)."""
    import seaborn as sns

    fig, axes = panel_grid(len(columns), ncols=ncols)
    for ax, col in zip(axes, columns):
        sns.boxplot(
            data=df, x=group, y=col, hue=hue, ax=ax, fliersize=1, palette=CENTER_PALETTE if hue else None
        )
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("")
        if hue and ax is not axes[0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    save_figure(fig, name)
    return fig
