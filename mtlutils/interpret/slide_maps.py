"""Slide maps of a MIL model: tile boxes on a thumbnail, painted tile values, attention-vs-truth Spearman."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mtlutils.bags.readers import BagSet

THUMB_DOWNSAMPLE = 4.0  #: level-0 px per thumbnail px of the slide pictures
MIN_TILES = 5  #: fewest tiles of a slide whose attention-vs-truth rank correlation is scored


def tile_boxes(coords_px: ArrayLike, tile_px: float, downsample: float) -> np.ndarray:
    """(n, 4) int thumbnail boxes ``x0, y0, x1, y1`` (half-open, thumbnail px) of tiles whose level-0
    top-left corners are ``coords_px`` ((n, 2) x, y in level-0 px) and side ``tile_px`` (level-0 px), on
    a thumbnail ``downsample`` times smaller (level-0 px per thumbnail px, any value > 0). A thumbnail
    pixel belongs to a tile when its centre lies in the tile's half-open level-0 extent, so adjacent
    tiles share no pixel and leave no gap, whatever the downsample."""
    xy = np.asarray(coords_px, dtype=float).reshape(-1, 2)
    if downsample <= 0 or tile_px <= 0:
        raise ValueError(f"downsample={downsample} and tile_px={tile_px} must be > 0")
    lo = np.ceil(xy / downsample - 0.5 - 1e-9)
    hi = np.ceil((xy + tile_px) / downsample - 0.5 - 1e-9)
    return np.concatenate([lo, hi], axis=1).astype(int)


def thumbnail_shape(boxes: ArrayLike) -> tuple[int, int]:
    """(height, width) in thumbnail px of the smallest thumbnail holding every box of :func:`tile_boxes`."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    return (int(boxes[:, 3].max(initial=0)), int(boxes[:, 2].max(initial=0)))


def paint(values: ArrayLike, boxes: ArrayLike, shape: tuple[int, int], fill: float = np.nan) -> np.ndarray:
    """A ``shape`` (height, width) float array with each tile's value (in its own units) over its
    thumbnail box and ``fill`` where no tile lies; a later tile overwrites an earlier one."""
    values = np.asarray(values, dtype=float).ravel()
    boxes = np.asarray(boxes).reshape(-1, 4)
    if values.size != len(boxes):
        raise ValueError(f"{values.size} values for {len(boxes)} tile boxes")
    out = np.full(shape, fill, dtype=float)
    for v, (x0, y0, x1, y1) in zip(values, boxes, strict=True):
        out[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = v
    return out


def mosaic(tiles: np.ndarray, boxes: ArrayLike, shape: tuple[int, int], background: int = 255) -> np.ndarray:
    """A (height, width, 3) uint8 thumbnail: each tile image ((n, px, px, 3) uint8) resized into its box,
    ``background`` grey where no tile lies (the slide's glass)."""
    from PIL import Image

    out = np.full((*shape, 3), background, dtype=np.uint8)
    for img, (x0, y0, x1, y1) in zip(np.asarray(tiles), np.asarray(boxes).reshape(-1, 4), strict=True):
        if x1 > x0 and y1 > y0:
            small = Image.fromarray(img).resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
            out[y0:y1, x0:x1] = np.asarray(small)
    return out


def slide_spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two per-tile vectors; NaN when either is constant (no ranking)
    or shorter than 2 (the guard is explicit: scipy would warn and return NaN for the same input)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.size != b.size:
        raise ValueError(f"vectors of {a.size} and {b.size} tiles")
    if a.size < 2 or np.unique(a).size < 2 or np.unique(b).size < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def spearman_summary(
    first: Sequence[ArrayLike], second: Sequence[ArrayLike], min_tiles: int = MIN_TILES
) -> dict[str, float | int]:
    """Per-slide Spearman of ``first[i]`` vs ``second[i]`` (e.g. [cls] attention and true lymphocytes
    per mm², one pair per slide) summarised over the slides with at least ``min_tiles`` tiles: median,
    quartiles ``q25`` and ``q75``, ``share_positive`` (share of scored slides with rho > 0), ``n_slides``
    (slides with >= min_tiles tiles), ``n_scored`` (those of them where neither vector is constant),
    ``n_constant`` (excluded as constant) and ``n_small`` (fewer than min_tiles tiles, not scored)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} and {len(second)} slides")
    sizes = np.array([np.size(a) for a in first])
    eligible = [i for i, n in enumerate(sizes) if n >= min_tiles]
    rho = np.array([slide_spearman(first[i], second[i]) for i in eligible], dtype=float)
    scored = rho[np.isfinite(rho)]
    q25, med, q75 = np.percentile(scored, [25, 50, 75]) if scored.size else (math.nan,) * 3
    return {
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "share_positive": float((scored > 0).mean()) if scored.size else math.nan,
        "n_slides": len(eligible),
        "n_scored": int(scored.size),
        "n_constant": int(len(eligible) - scored.size),
        "n_small": int(len(sizes) - len(eligible)),
        "min_tiles": int(min_tiles),
    }


def attention_tiles(bags: BagSet, attention: Sequence[np.ndarray], root: str | Path) -> pd.DataFrame:
    """One row per tile of ``bags`` (a :class:`~mtlutils.bags.readers.BagSet` of the synthetic cohort at
    ``root``): patient_id, slide_id, tile, x_px, y_px (level-0 corner, px, from the stored µm coords),
    attention (the bag's [cls] attention, a share of the whole bag) and the truth of
    ``truth/tiles.csv`` (tumour, tme_tile, lymphocytes, lymph_per_mm2, col, row). Fails when a stored
    tile coordinate disagrees with the truth's grid position (the two tables are then misaligned)."""
    root = Path(root)
    mpp, tile_px = cohort_scale(root)
    parts = []
    for i, patient in enumerate(bags.patients):
        slides = np.asarray(bags.tile_slides[i]).astype(str)
        for slide in dict.fromkeys(slides):
            rows = slides == slide
            xy = np.asarray(bags.coords[i])[rows] / mpp
            parts.append(
                pd.DataFrame(
                    {
                        "patient_id": str(patient),
                        "slide_id": slide,
                        "tile": np.arange(int(rows.sum())),
                        "x_px": np.round(xy[:, 0]).astype(int),
                        "y_px": np.round(xy[:, 1]).astype(int),
                        "attention": np.asarray(attention[i], dtype=float)[rows],
                    }
                )
            )
    table = pd.concat(parts, ignore_index=True)
    truth = pd.read_csv(root / "truth" / "tiles.csv")
    keep = ["slide_id", "tile", "tumour", "tme_tile", "lymphocytes", "lymph_per_mm2", "col", "row"]
    out = table.merge(truth[keep], on=["slide_id", "tile"], how="left", validate="one_to_one")
    bad = (out["col"] * tile_px != out["x_px"]) | (out["row"] * tile_px != out["y_px"])
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} tiles (e.g. slide {out.loc[bad, 'slide_id'].iloc[0]}) have stored coordinates "
            f"that disagree with {root / 'truth' / 'tiles.csv'}; rebuild the bag cohort"
        )
    return out


def cohort_scale(root: str | Path) -> tuple[float, int]:
    """(µm per level-0 px, tile side in level-0 px) of the bag cohort at ``root`` (its cohort.json)."""
    config = json.loads((Path(root) / "cohort.json").read_text())["config"]
    return float(config["mpp"]), int(config["tile_px"])


def render_slide(root: str | Path, slide_id: str) -> np.ndarray:
    """The (n, px, px, 3) uint8 tiles of one slide of the synthetic bag cohort, re-rendered from its
    stored plan (deterministic) with :func:`mtlutils.bags.features.render_tiles`."""
    from mtlutils.bags.cohort import BagCohortConfig
    from mtlutils.bags.features import render_tiles

    root = Path(root)
    config = dict(json.loads((root / "cohort.json").read_text())["config"])
    config["tiles"], config["centers"] = tuple(config["tiles"]), tuple(config["centers"])
    tiles = pd.read_csv(root / "truth" / "tiles.csv")
    slides = pd.read_csv(root / "truth" / "slides.csv").set_index("slide_id")
    mine = tiles[tiles["slide_id"] == slide_id].sort_values("tile")
    return render_tiles(mine, str(slides.loc[slide_id, "center"]), BagCohortConfig(**config))[0]


@dataclass
class SlideMaps:
    """The pictures of one slide, all (height, width) thumbnail px: ``thumbnail`` RGB uint8, and per
    tile (NaN off tissue) ``attention`` (share of the bag), ``density`` (true lymphocytes per mm²) and
    ``tumour`` (0/1 truth); ``title`` names the slide and its prediction."""

    thumbnail: np.ndarray
    attention: np.ndarray
    density: np.ndarray
    tumour: np.ndarray
    title: str


def slide_maps(
    tiles: pd.DataFrame,
    images: np.ndarray,
    tile_px: int,
    title: str,
    downsample: float = THUMB_DOWNSAMPLE,
) -> SlideMaps:
    """:class:`SlideMaps` of one slide from its rows of :func:`attention_tiles` (``tiles``) and their
    tile images (``images``, same order), at ``downsample`` level-0 px per thumbnail px."""
    boxes = tile_boxes(tiles[["x_px", "y_px"]].to_numpy(), tile_px, downsample)
    shape = thumbnail_shape(boxes)
    return SlideMaps(
        mosaic(images, boxes, shape),
        paint(tiles["attention"], boxes, shape),
        paint(tiles["lymph_per_mm2"], boxes, shape),
        paint(tiles["tumour"], boxes, shape),
        title,
    )


def pick_slides(
    patients: ArrayLike, y: ArrayLike, prob: ArrayLike, tiles: pd.DataFrame, min_tiles: int = MIN_TILES
) -> dict[str, tuple[str, str] | None]:
    """{"correct": (patient, slide), "wrong": (patient, slide) or None}: the most confidently right and
    the most confidently wrong patient (P(biomarker) on the 0.5 side of / against its label) among those
    with a slide of >= ``min_tiles`` tiles in ``tiles``, with that slide (its largest)."""
    sizes = tiles.groupby(["patient_id", "slide_id"]).size().reset_index(name="n")
    sizes = sizes[sizes["n"] >= min_tiles].sort_values("n", ascending=False)
    largest = sizes.drop_duplicates("patient_id").set_index("patient_id")["slide_id"]
    table = pd.DataFrame({"patient_id": np.asarray(patients).astype(str), "y": y, "prob": prob})
    table = table[table["patient_id"].isin(largest.index)]
    table["right"] = (table["prob"] >= 0.5) == (table["y"] == 1)
    table["confidence"] = (table["prob"] - 0.5).abs()
    out: dict[str, tuple[str, str] | None] = {}
    for key, right in (("correct", True), ("wrong", False)):
        pool = table[table["right"] == right].sort_values("confidence", ascending=False)
        out[key] = (pool["patient_id"].iloc[0], largest[pool["patient_id"].iloc[0]]) if len(pool) else None
    return out


def _outline(ax: Axes, tumour: np.ndarray) -> None:
    if np.nanmax(np.nan_to_num(tumour, nan=0.0), initial=0.0) > 0:
        ax.contour(np.nan_to_num(tumour, nan=0.0), levels=[0.5], colors=["#56B4E9"], linewidths=1.2)


def slide_figure(maps: Sequence[SlideMaps], name: str | None = None) -> Figure:
    """One row per slide: the tile mosaic, the [cls] attention over it, the true lymphocyte density;
    the true tumour tiles outlined (sky blue) on every panel. Saved as ``name``."""
    import matplotlib.pyplot as plt

    from mtlutils.plotting import save_figure

    if not maps:
        raise ValueError("slide_figure(): no slides to draw")
    fig, axes = plt.subplots(len(maps), 3, figsize=(10.5, 3.4 * len(maps)), squeeze=False)
    for row, m in zip(axes, maps, strict=True):
        row[0].imshow(m.thumbnail)
        row[0].set_title(f"{m.title}\ntiles (tumour outlined)", fontsize=8)
        row[1].imshow(m.thumbnail, alpha=0.45)
        att = row[1].imshow(m.attention, cmap="inferno", alpha=0.8)
        row[1].set_title("[cls] attention (share of the bag)", fontsize=8)
        den = row[2].imshow(m.density, cmap="viridis")
        row[2].set_title("true lymphocytes per mm²", fontsize=8)
        fig.colorbar(att, ax=row[1], fraction=0.046, pad=0.03)
        fig.colorbar(den, ax=row[2], fraction=0.046, pad=0.03)
        for ax in row:
            _outline(ax, m.tumour)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, name)
    return fig
