"""Training and results: curves over epochs, intervals per configuration, per-seed AUC dots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mtlutils.plotting.base import panel_grid, save_figure


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
