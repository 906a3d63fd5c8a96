"""Distributions and associations: box plots and scatters by center and class, heatmaps of tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mtlutils.plotting.base import CENTER_PALETTE, panel_grid, save_figure


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
