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


def notebook_theme(palette: str = "colorblind") -> None:
    """Figures that read in light and dark JupyterLab themes: transparent backgrounds, mid-grey text and
    axes, and a colour-blind-safe palette (seaborn ``palette``) for lines and the centers' colours."""
    import seaborn as sns

    global CENTER_PALETTE
    CENTER_PALETTE = palette
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


def _outline(labels: np.ndarray, thickness: int) -> np.ndarray:
    """Inner outline of every region of ``labels``: a labelled pixel whose 4-neighbourhood holds another
    label (or background), widened to ``thickness`` px."""
    from scipy import ndimage as ndi

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
    return edge


OUTLINE_RGB = (240, 228, 66)  #: Okabe-Ito yellow: predicted nuclei
TRUTH_RGB = (86, 180, 233)  #: Okabe-Ito sky blue: true nuclei (outlines and centre marks)


def segmentation_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    color: tuple[int, int, int] = OUTLINE_RGB,
    thickness: int = 1,
    points: np.ndarray | None = None,
    point_color: tuple[int, int, int] = TRUTH_RGB,
    truth: np.ndarray | None = None,
    marker_px: int = 3,
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with the outline of every labelled region (e.g. each nucleus) drawn in
    ``color``; ``labels`` is an (H, W) integer image, 0 = background. ``truth``: an optional second label
    image (e.g. annotated nuclei) outlined in ``point_color`` underneath. ``points``: optional (K, 2) x, y
    positions in image pixels (e.g. true nucleus centres, a pixel's centre at +0.5) marked by a cross of
    arms ``marker_px`` long in ``point_color``, edged in black so it shows on any tissue. Colours default
    to the colour-blind-safe Okabe-Ito yellow and sky blue. Returns a new uint8 array."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"segmentation_overlay(): image must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    for what, lab in (("labels", labels), ("truth", truth)):
        if lab is not None and np.shape(lab) != image.shape[:2]:
            raise ValueError(
                f"segmentation_overlay(): {what} {np.shape(lab)} and image {image.shape[:2]} differ in size; "
                "pass the label image segmented from this image"
            )
    if thickness < 1 or marker_px < 0:
        raise ValueError(f"segmentation_overlay(): thickness={thickness} must be >= 1 px, marker_px >= 0")
    out = image.copy()
    if truth is not None:
        out[_outline(np.asarray(truth), thickness)] = np.asarray(point_color, dtype=np.uint8)
    out[_outline(labels, thickness)] = np.asarray(color, dtype=np.uint8)
    if points is not None:
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        cols, rows = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
        arm = range(-marker_px, marker_px + 1)
        cross = [(d, 0) for d in arm] + [(0, d) for d in arm]
        rim = {(dr + a, dc + b) for dr, dc in cross for a in (-1, 0, 1) for b in (-1, 0, 1)} - set(cross)
        for offsets, rgb in ((rim, (0, 0, 0)), (cross, point_color)):
            for dr, dc in offsets:
                r, c = rows + dr, cols + dc
                ok = (r >= 0) & (r < out.shape[0]) & (c >= 0) & (c < out.shape[1])
                out[r[ok], c[ok]] = np.asarray(rgb, dtype=np.uint8)
    return out


def segmentation_steps(
    image: np.ndarray,
    labels: np.ndarray,
    extras: Mapping[str, object],
    mpp: float,
    truth: np.ndarray | None = None,
    title: str | None = None,
    name: str | None = None,
    size: float = 3.0,
    points: np.ndarray | None = None,
) -> matplotlib.figure.Figure:
    """The steps of :func:`mtlutils.concepts.segment.segment_with_maps` for one patch, axes in µm:
    the image, its hematoxylin OD, the nuclear foreground, the summed distance map (µm), the watershed
    basins with their markers, and the final nuclei (``truth``, if given, outlined beside them)."""
    from matplotlib.colors import ListedColormap

    needed = ("h", "foreground", "distance", "markers", "basins")
    missing = [k for k in needed if k not in extras]
    if missing:
        raise ValueError(
            f"segmentation_steps(): extras lack {missing}: the patch had no nuclear population "
            "(no foreground); pick another patch"
        )
    height, width = labels.shape
    extent = (0.0, width * mpp, height * mpp, 0.0)
    fig, axes = plt.subplots(2, 3, figsize=(3 * size + 1.2, 2 * size + 0.6))
    rng = np.random.default_rng(0)
    shuffled = ListedColormap(rng.uniform(0.25, 1.0, (256, 3)))
    basins = np.asarray(extras["basins"])
    markers = np.asarray(extras["markers"])
    panels = [
        ("image", image, None, None),
        ("hematoxylin (OD)", extras["h"], "magma", "OD"),
        ("foreground mask", extras["foreground"], "gray", None),
        ("distance map (µm, summed)", np.asarray(extras["distance"]) * mpp, "viridis", "µm"),
        (
            f"basins ({int(basins.max())}) and markers ({len(markers)})",
            np.ma.masked_equal(basins % 256, 0),
            shuffled,
            None,
        ),
        (
            f"final nuclei ({int(labels.max())})",
            segmentation_overlay(image, labels, truth=truth, points=points),
            None,
            None,
        ),
    ]
    for ax, (label, picture, cmap, unit) in zip(axes.ravel(), panels):
        shown = ax.imshow(picture, cmap=cmap, extent=extent, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        if unit:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03, label=unit)
    if len(markers):
        axes[1, 1].scatter(
            (markers[:, 1] + 0.5) * mpp,
            (markers[:, 0] + 0.5) * mpp,
            s=10,
            c="white",
            edgecolors="black",
            linewidths=0.5,
        )
    for ax in axes.ravel():
        ax.set_xlabel("x (µm)", fontsize=8)
        ax.set_ylabel("y (µm)", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


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
    blocks: Sequence[Mapping[str, object]] | None = None,
    xlabel: str = "",
    ylabel: str = "",
) -> matplotlib.figure.Figure:
    """A numeric table as an annotated colour grid (rows × columns), e.g. concept × statistic.

    ``blocks``: columns that are different quantities get their own colour scale, one panel each side
    by side: a list of mappings with ``columns`` (list of column names) and optional ``cmap``, ``vmin``,
    ``vmax``, ``center``, ``label`` (the colour bar's label, e.g. "Spearman ρ" or "η²"); the single-scale
    arguments are then unused."""
    import seaborn as sns

    if table.empty:
        raise ValueError("heatmap(): the table is empty; check the selection that produced it")
    values = table.apply(pd.to_numeric, errors="coerce")
    if blocks is None:
        blocks = [
            {"columns": list(values.columns), "cmap": cmap, "center": center, "vmin": vmin, "vmax": vmax}
        ]
    unknown = sorted({c for b in blocks for c in b["columns"]} - set(values.columns))  # type: ignore[union-attr]
    if unknown:
        raise ValueError(f"heatmap(): blocks name columns the table lacks: {unknown}")
    widths = [len(b["columns"]) for b in blocks]  # type: ignore[arg-type]
    width, height = size or (
        1.0 + 1.0 * values.shape[1] + 0.9 * (len(blocks) - 1),
        0.8 + 0.38 * values.shape[0],
    )
    fig, axes = plt.subplots(
        1,
        len(blocks),
        figsize=(max(width, 3.0), max(height, 2.0)),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for k, (ax, block) in enumerate(zip(axes[0], blocks)):
        sns.heatmap(
            values[list(block["columns"])],  # type: ignore[arg-type]
            annot=True,
            fmt=fmt,
            cmap=block.get("cmap", cmap),
            center=block.get("center"),
            vmin=block.get("vmin"),
            vmax=block.get("vmax"),
            ax=ax,
            cbar=True,
            cbar_kws={"label": block.get("label", "")},
            yticklabels=k == 0,
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if k == 0 else "")
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    if title:
        fig.suptitle(title, fontsize=10) if len(blocks) > 1 else axes[0, 0].set_title(title, fontsize=10)
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
