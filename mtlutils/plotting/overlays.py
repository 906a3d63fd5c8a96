"""Segmentation pictures: outlines of predicted and true nuclei over a patch, and the recipe step by step."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from mtlutils.plotting.base import save_figure

OUTLINE_RGB = (240, 228, 66)  #: Okabe-Ito yellow: predicted nuclei
TRUTH_RGB = (86, 180, 233)  #: Okabe-Ito sky blue: true nuclei (outlines and centre marks)


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
