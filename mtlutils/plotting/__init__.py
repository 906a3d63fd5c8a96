"""Figures for the notebooks: image montages, slide overlays, distributions by group, training curves.

Every function returns the matplotlib ``Figure`` and, when the runner set a run folder, saves it there
as ``figures/<name>.png`` through :func:`save_figure` (so a batch run keeps the pictures).
"""

from mtlutils.core.runner import RUN_DIR_ENV
from mtlutils.plotting.base import (
    CENTER_PALETTE,
    image_grid,
    notebook_theme,
    panel_grid,
    read_image,
    save_figure,
)
from mtlutils.plotting.distributions import distributions_by_group, heatmap, scatter_by_group, scatter_panels
from mtlutils.plotting.overlays import OUTLINE_RGB, TRUTH_RGB, segmentation_overlay, segmentation_steps
from mtlutils.plotting.results import curves, interval_plot, per_seed_auc

__all__ = [
    "CENTER_PALETTE",
    "OUTLINE_RGB",
    "RUN_DIR_ENV",
    "TRUTH_RGB",
    "curves",
    "distributions_by_group",
    "heatmap",
    "image_grid",
    "interval_plot",
    "notebook_theme",
    "panel_grid",
    "per_seed_auc",
    "read_image",
    "save_figure",
    "scatter_by_group",
    "scatter_panels",
    "segmentation_overlay",
    "segmentation_steps",
]
