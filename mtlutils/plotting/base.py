"""Figure basics: where figures are saved (the run folder), panel grids, image montages, the notebook theme."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from mtlutils.core.io import atomic_path
from mtlutils.core.runner import RUN_DIR_ENV

CENTER_PALETTE = "colorblind"  #: seaborn palette of the centers (colour-blind safe)


def save_figure(fig: matplotlib.figure.Figure, name: str | None) -> Path | None:
    """Save ``fig`` as ``<run dir>/figures/<name>.png`` when running under the runner; return the path."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not (run_dir and name):
        return None
    path = Path(run_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def panel_grid(n: int, ncols: int = 4, size: float = 3.2) -> tuple[matplotlib.figure.Figure, np.ndarray]:
    """An ``n``-panel figure (axes flattened; unused panels hidden)."""
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()[:n]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 array from a PNG/JPEG file (e.g. the QC pictures written by tiling)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


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


def notebook_theme(palette: str = "colorblind") -> None:
    """Figures that read in light and dark JupyterLab themes: transparent backgrounds, mid-grey text and
    axes, and a colour-blind-safe palette (seaborn ``palette``) for lines and the centers' colours."""
    import seaborn as sns

    grey = "0.5"
    plt.rcParams.update(
        {
            "figure.facecolor": "none",
            "savefig.facecolor": "none",
            "savefig.transparent": True,
            "axes.facecolor": "none",
            "legend.facecolor": "none",
            "legend.framealpha": 0.0,
            "text.color": grey,
            "axes.labelcolor": grey,
            "axes.edgecolor": grey,
            "xtick.color": grey,
            "ytick.color": grey,
            "axes.prop_cycle": matplotlib.cycler(color=sns.color_palette(palette)),
        }
    )
