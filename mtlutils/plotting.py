"""Figures for the notebooks: image montages, slide overlays, distributions by group.

Every function returns the matplotlib ``Figure`` and, when the runner set a run folder, saves it there
as ``figures/<name>.png`` through :func:`save_figure` (so a batch run keeps the pictures).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mtlutils.core.io import atomic_path
from mtlutils.core.runner import RUN_DIR_ENV

CENTER_PALETTE = "tab10"


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


def segmentation_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    color: tuple[int, int, int] = (0, 255, 0),
    thickness: int = 1,
    points: np.ndarray | None = None,
    point_color: tuple[int, int, int] = (255, 255, 0),
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with the outline of every labelled region (e.g. each nucleus) drawn in
    ``color``; ``labels`` is an (H, W) integer image, 0 = background. ``points``: optional (K, 2) x, y
    positions in image pixels (e.g. true nucleus centres, a pixel's centre at +0.5) marked by a small
    cross in ``point_color``. Returns a new uint8 array."""
    from scipy import ndimage as ndi

    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"segmentation_overlay(): image must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"segmentation_overlay(): labels {labels.shape} and image {image.shape[:2]} differ in size; "
            "pass the label image segmented from this image"
        )
    if thickness < 1:
        raise ValueError(f"segmentation_overlay(): thickness={thickness} must be >= 1 px")
    # inner outline: a labelled pixel whose 4-neighbourhood holds another label (or background)
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        differs = np.diff(labels, axis=axis) != 0
        lo = [slice(None), slice(None)]
        hi = [slice(None), slice(None)]
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        edge[tuple(lo)] |= differs
        edge[tuple(hi)] |= differs
    edge &= labels > 0
    if thickness > 1:
        edge = ndi.binary_dilation(edge, iterations=thickness - 1) & (labels > 0)
    out = image.copy()
    out[edge] = np.asarray(color, dtype=np.uint8)
    if points is not None:
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        cols, rows = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
        for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
            r, c = rows + dr, cols + dc
            ok = (r >= 0) & (r < out.shape[0]) & (c >= 0) & (c < out.shape[1])
            out[r[ok], c[ok]] = np.asarray(point_color, dtype=np.uint8)
    return out


def heatmap(
    table: pd.DataFrame,
    name: str | None = None,
    title: str | None = None,
    cmap: str = "vlag",
    center: float | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    fmt: str = ".2f",
    size: tuple[float, float] | None = None,
) -> matplotlib.figure.Figure:
    """A numeric table as an annotated colour grid (rows × columns), e.g. concept × statistic."""
    import seaborn as sns

    if table.empty:
        raise ValueError("heatmap(): the table is empty; check the selection that produced it")
    values = table.apply(pd.to_numeric, errors="coerce")
    width, height = size or (1.0 + 0.9 * values.shape[1], 0.8 + 0.38 * values.shape[0])
    fig, ax = plt.subplots(figsize=(max(width, 3.0), max(height, 2.0)))
    sns.heatmap(values, annot=True, fmt=fmt, cmap=cmap, center=center, vmin=vmin, vmax=vmax, ax=ax, cbar=True)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def scatter_panels(
    df: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    hue: str | None = None,
    titles: Sequence[str] | None = None,
    name: str | None = None,
    identity: bool = True,
    ncols: int = 4,
    size: float = 3.4,
) -> matplotlib.figure.Figure:
    """One scatter panel per ``(x, y)`` column pair, coloured by ``hue``; ``identity`` draws y = x
    (e.g. measured against true values in the same unit)."""
    import seaborn as sns

    if not pairs:
        raise ValueError("scatter_panels(): no (x, y) pairs to plot")
    missing = sorted(
        {c for pair in pairs for c in pair if c not in df.columns} | ({hue} - set(df.columns) - {None})
    )
    if missing:
        raise ValueError(f"scatter_panels(): the table lacks column(s) {missing}")
    fig, axes = panel_grid(len(pairs), ncols=ncols, size=size)
    for k, (ax, (x, y)) in enumerate(zip(axes, pairs, strict=True)):
        sns.scatterplot(
            data=df,
            x=x,
            y=y,
            hue=hue,
            ax=ax,
            s=10,
            alpha=0.6,
            linewidth=0,
            palette=CENTER_PALETTE if hue else None,
            legend=k == 0,
        )
        if identity:
            finite = df[[x, y]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
            finite = finite[np.isfinite(finite).all(axis=1)]
            if len(finite):
                lo, hi = float(finite.min()), float(finite.max())
                ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
        if titles is not None:
            ax.set_title(titles[k], fontsize=9)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def curves(
    history: pd.DataFrame,
    columns: Sequence[str],
    hue: str = "run",
    x: str = "epoch",
    titles: Sequence[str] | None = None,
    name: str | None = None,
    ncols: int = 4,
    size: float = 3.4,
) -> matplotlib.figure.Figure:
    """One line panel per column of a stacked per-epoch log (e.g. ``guided.histories``), one line per
    ``hue`` value; a column absent from a run (a task it does not have) is simply not drawn for it."""
    import seaborn as sns

    present = [c for c in columns if c in history.columns]
    if not present:
        raise ValueError(f"curves(): none of {list(columns)} is a column of the log; see history.columns")
    fig, axes = panel_grid(len(present), ncols=ncols, size=size)
    for k, (ax, column) in enumerate(zip(axes, present, strict=True)):
        sns.lineplot(data=history, x=x, y=column, hue=hue, ax=ax, marker="o", markersize=3, legend=k == 0)
        ax.set_title(titles[k] if titles is not None else column, fontsize=9)
        ax.set_ylabel("")
    if len(present) > 0 and axes[0].get_legend() is not None:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def interval_plot(
    table: pd.DataFrame,
    value: str,
    error: str,
    label: str,
    hue: str,
    reference: float | None = None,
    title: str | None = None,
    name: str | None = None,
) -> matplotlib.figure.Figure:
    """Mean ± error per row (one row per ``label`` x ``hue``), horizontal; ``reference`` draws a line
    (e.g. the baseline's value)."""
    if table.empty:
        raise ValueError("interval_plot(): the table is empty")
    labels = list(dict.fromkeys(table[label]))
    hues = list(dict.fromkeys(table[hue]))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.42 * len(labels)))
    step = 0.7 / max(len(hues), 1)
    for j, h in enumerate(hues):
        part = table[table[hue] == h]
        y = [labels.index(v) + (j - (len(hues) - 1) / 2) * step for v in part[label]]
        ax.errorbar(
            part[value], y, xerr=part[error].fillna(0), fmt="o", ms=4, capsize=3, color=colours(j), label=h
        )
    if reference is not None:
        ax.axvline(reference, color="0.4", lw=0.8, ls="--")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(value)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def per_seed_auc(
    runs: pd.DataFrame,
    rows: pd.DataFrame,
    baseline: Mapping[str, float],
    labels: Sequence[str],
    name: str | None = None,
) -> matplotlib.figure.Figure:
    """One dot per seed and a bar at the mean for each configuration of ``rows`` (variant, weighting),
    internal and external test AUC side by side, axes clipped at 1, baseline mean and chance in the legend.

    ``runs``: one row per training with ``variant``, ``weighting``, ``int_auc``, ``ext_auc``;
    ``baseline``: ``{"int_auc": …, "ext_auc": …}``; ``labels``: one y tick label per row of ``rows``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 + 0.32 * len(rows)), sharey=True)
    for ax, part, title in zip(axes, ("int", "ext"), ("internal test slides", "external (unseen) center")):
        for j, row in enumerate(rows.itertuples()):
            chosen = (runs["variant"] == row.variant) & (runs["weighting"] == row.weighting)
            auc = runs.loc[chosen, f"{part}_auc"]
            ax.scatter(
                auc,
                np.full(len(auc), j),
                s=14,
                color="tab:blue",
                alpha=0.6,
                label="one seed" if j == 0 else None,
            )
            ax.scatter(
                auc.mean(), j, marker="|", s=200, color="black", label="mean over seeds" if j == 0 else None
            )
        ax.axvline(baseline[f"{part}_auc"], color="tab:orange", ls="--", lw=1, label="baseline (ID 1) mean")
        ax.axvline(0.5, color="0.5", ls=":", lw=1, label="chance (0.5)")
        ax.set_xlim(min(0.45, float(runs[f"{part}_auc"].min()) - 0.02), 1.0)
        ax.set_xlabel(f"{title.split(' ')[0]} test AUC (unitless, clipped at 1)")
        ax.set_title(title)
    axes[0].set_yticks(range(len(labels)), list(labels), fontsize=7)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7, loc="lower left")
    save_figure(fig, name)
    return fig
