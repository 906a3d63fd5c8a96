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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 array from a PNG/JPEG file (e.g. the QC pictures written by tiling)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def scatter_by_group(
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    col: str | None = None,
    name: str | None = None,
    size: float = 3.2,
) -> matplotlib.figure.Figure:
    """Scatter ``y`` against ``x`` coloured by ``hue``, one panel per value of ``col``."""
    import seaborn as sns

    grid = sns.relplot(
        data=df, x=x, y=y, hue=hue, col=col, height=size, s=18, alpha=0.8, palette=CENTER_PALETTE
    )
    save_figure(grid.figure, name)
    return grid.figure
