"""Tiling a whole cohort into a resumable patch dataset: one HDF5 per slide, ``index.csv``, QC pictures.

A slide with an annotation file is labelled from its polygons; a slide without one whose manifest says
``has_tumour = 0`` is all normal (label 0); any other slide without annotation has *unknown* tile labels
(NaN, tiles kept). See :mod:`mtlutils.data.tiling` for the labels and :mod:`mtlutils.data.wsi` for MPP.

Bad slides: a slide that cannot be opened or read (truncated, corrupt, not a slide, empty, no tissue,
smaller than one tile) is reported and skipped, the others are tiled; ``index.attrs["skipped_slides"]``
and ``dataset.json`` name each with a one-line reason, and a warning lists them. A slide without MPP
metadata stops the whole run before any tiling: its fix (``mpp_override`` / ``--mpp-override`` or the
manifest's ``mpp`` column) is a choice of the user's configuration, not something to drop data over.
When every slide fails, one one-line error is raised.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.core import hdf5
from mtlutils.core import io as mio
from mtlutils.core.parallel import check_workers, parallel_map
from mtlutils.core.provenance import code_version
from mtlutils.data.manifest import read_manifest, validate_manifest
from mtlutils.data.tiling import COORD_COLUMNS, iter_tile_blocks, plan_tiles
from mtlutils.data.tissue import TissueMask
from mtlutils.data.wsi import MissingMPPError, SlideError, open_slide

__all__ = ["tile_cohort", "tile_overlay"]

#: Version of the per-slide HDF5 layout; part of the cache key.
CACHE_FORMAT = 1
#: Root of the code that computes a patch file: its :func:`code_version` with every mtlutils module
#: it imports (tiling, tissue, wsi, annotations, hdf5 …) is part of the cache key.
TILING_CODE = ("mtlutils.data.cohort",)
_COORD_DATASETS = COORD_COLUMNS
QC_TUMOUR_RGB = (213, 94, 0)  #: Okabe-Ito vermillion: tumour tiles in QC pictures
QC_NORMAL_RGB = (0, 114, 178)  #: Okabe-Ito blue: normal tiles
QC_UNKNOWN_RGB = (204, 121, 167)  #: Okabe-Ito reddish purple: tiles without a label
_SLIDE_META = ("slide_id", "patient_id", "center", "split", "has_tumour", "biomarker", "tme_score")


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def _row_mpp(row: dict[str, Any]) -> float | None:
    """The manifest's per-slide ``mpp`` (an override of the metadata), or None when empty."""
    value = row.get("mpp")
    return float(value) if value is not None and not pd.isna(value) else None


def _check_slide_opens(row: dict[str, Any], mpp_override: float | None) -> SlideError | None:
    """Open a manifest row's slide and resolve its MPP: None when fine, the error of a bad slide;
    a missing MPP raises (a configuration error, see the module docstring)."""
    try:
        with open_slide(row["path"], mpp_override=_row_mpp(row), default_mpp=mpp_override):
            return None
    except MissingMPPError:
        raise
    except SlideError as exc:
        return exc


def _tile_one_slide(
    row: dict[str, Any], out_dir: str, params: dict[str, Any], mpp_override: float | None, code: str = ""
) -> dict[str, Any]:
    """Tile one row (see :func:`_tile_slide_file`); a bad slide gives ``{"error": SlideError}``."""
    import openslide

    try:
        return _tile_slide_file(row, out_dir, params, mpp_override, code)
    except MissingMPPError:
        raise
    except SlideError as exc:
        return {"slide_id": row["slide_id"], "skipped": False, "error": exc}
    except openslide.OpenSlideError as exc:  # a tile beyond the end of a truncated file
        message = (
            f"slide {row['path']} cannot be read ({exc}); the file may be truncated or corrupt: copy it again"
        )
        return {"slide_id": row["slide_id"], "skipped": False, "error": SlideError(message)}


def _tile_slide_file(
    row: dict[str, Any], out_dir: str, params: dict[str, Any], mpp_override: float | None, code: str
) -> dict[str, Any]:
    """Tile one manifest row into ``out_dir/{slide_id}.h5`` unless an identical cache exists."""
    from mtlutils.data.annotations import read_asap_xml

    target = Path(out_dir) / f"{row['slide_id']}.h5"
    with open_slide(row["path"], mpp_override=_row_mpp(row), default_mpp=mpp_override) as slide:
        stat = Path(row["path"]).stat()
        key = {
            **params,
            "format": CACHE_FORMAT,
            "code_version": code,
            "mpp": slide.mpp,
            "slide_hash": slide.properties.get("openslide.quickhash-1"),  # content hash from OpenSlide
            "source_size": stat.st_size,
            "source_mtime_ns": None if slide.properties.get("openslide.quickhash-1") else stat.st_mtime_ns,
            "annotation_sha": _file_digest(row.get("annotation")),
            "has_tumour": _clean(row.get("has_tumour")),
        }
        if target.exists():
            try:
                if hdf5.read_h5_attrs(target).get("cache_key") == key:
                    return {"slide_id": row["slide_id"], "skipped": True}
            except OSError:
                pass  # unreadable or corrupt cache: rebuild it
        if row.get("annotation"):
            polygons = read_asap_xml(row["annotation"])
            exclusions = read_asap_xml(row["annotation"], exclusions=True)
        elif _clean(row.get("has_tumour")) == 0:
            polygons, exclusions = [], []
        else:
            polygons, exclusions = None, []
        plan = plan_tiles(
            slide,
            tile_mpp=params["tile_mpp"],
            tile_px=params["tile_px"],
            tissue_threshold=params["tissue_threshold"],
            tumour_polygons=polygons,
            exclusion_polygons=exclusions,
            tumour_min=params["tumour_min"],
            normal_max=params["normal_max"],
            max_tiles=params["max_tiles_per_slide"],
            seed=params["seed"],
            mask_mpp=params["mask_mpp"],
        )
        n, tile_px = len(plan.coords), params["tile_px"]
        attrs = {
            "slide_id": row["slide_id"],
            "patient_id": row["patient_id"],
            "center": row["center"],
            "split": row["split"],
            "mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
            "tile_px": tile_px,
            "tile_mpp": params["tile_mpp"],
            "source": str(row["path"]),
            "n_tiles": n,
            "cache_key": key,
            **{k: v for k, v in plan.info.items()},
        }
        with hdf5.h5_writer(target, attrs) as h5:
            images = hdf5.create_h5_dataset(h5, "images", shape=(n, tile_px, tile_px, 3), dtype=np.uint8)
            for members, block in iter_tile_blocks(slide, plan):
                if np.all(np.diff(members) == 1):
                    images[int(members[0]) : int(members[-1]) + 1] = block  # runs are consecutive rows
                else:
                    for k, i in enumerate(members):
                        images[int(i)] = block[k]
            hdf5.create_h5_dataset(h5, "coords", data=plan.coords[["x_px", "y_px"]].to_numpy(np.int64))
            for col in _COORD_DATASETS:
                hdf5.create_h5_dataset(h5, col, data=plan.coords[col].to_numpy())
        if plan.tissue is not None:
            _save_png(
                Path(out_dir) / "qc" / f"{row['slide_id']}.png",
                tile_overlay(plan.tissue, plan.coords, plan.tile_size_px),
            )
    return {"slide_id": row["slide_id"], "skipped": False, "n_tiles": n}


def _save_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with mio.atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def tile_overlay(tissue: TissueMask, coords: pd.DataFrame, tile_size_px: float, scale: int = 2) -> np.ndarray:
    """Quality-control picture: the thumbnail with the tissue outline (enlarged ``scale`` x) and each
    tile's outline in colour-blind-safe colours: vermillion for tumour, blue for normal, reddish purple
    for an unknown label. Returns RGB uint8."""
    picture = np.repeat(np.repeat(tissue.overlay(), scale, axis=0), scale, axis=1)
    dx, dy = tissue.downsample
    colours = {1.0: QC_TUMOUR_RGB, 0.0: QC_NORMAL_RGB}
    h, w = picture.shape[:2]
    for x, y, label in zip(coords["x_px"], coords["y_px"], coords["label"], strict=True):
        colour = colours.get(float(label), QC_UNKNOWN_RGB) if not pd.isna(label) else QC_UNKNOWN_RGB
        x0, y0 = int(x / dx * scale), int(y / dy * scale)
        x1, y1 = (
            min(w - 1, int((x + tile_size_px) / dx * scale) - 1),
            min(h - 1, int((y + tile_size_px) / dy * scale) - 1),
        )
        if x1 <= x0 or y1 <= y0:
            continue
        picture[y0, x0 : x1 + 1] = colour
        picture[y1, x0 : x1 + 1] = colour
        picture[y0 : y1 + 1, x0] = colour
        picture[y0 : y1 + 1, x1] = colour
    return picture


def _as_manifest(manifest: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A validated manifest from a CSV path or a table (relative paths in a table: against the folder
    of the CSV it was read from, else the current folder)."""
    if isinstance(manifest, pd.DataFrame):
        source = manifest.attrs.get("manifest_path")
        base = Path(source).parent if source else Path.cwd()
        return validate_manifest(
            manifest, base_dir=base, name=f"manifest {source}" if source else "manifest table"
        )
    return read_manifest(manifest)


def tile_cohort(
    manifest: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    tile_mpp: float = 0.5,
    tile_px: int = 224,
    mpp_override: float | None = None,
    tissue_threshold: float = 0.5,
    max_tiles_per_slide: int | None = None,
    seed: int = 0,
    workers: int = 1,
    show_progress: bool = True,
    tumour_min: float = 0.5,
    normal_max: float = 0.05,
    mask_mpp: float = 8.0,
) -> pd.DataFrame:
    """Tile every slide of a manifest into a resumable patch cache; return the patch index.

    Writes ``out_dir/{slide_id}.h5`` (datasets ``images`` (N, tile_px, tile_px, 3) uint8 chunked per
    tile, ``coords`` (N, 2) level-0 px, and one dataset per coordinate column; attributes
    ``slide_id, center, split, mpp, tile_px, tile_mpp, source`` and the cache key), each atomically and
    skipped when already present with the same parameters; then ``out_dir/index.csv`` (one row per
    patch: slide metadata, coordinates, fractions, label, ``row`` within the slide file, ``file``) and
    ``out_dir/dataset.json`` (parameters and counts), and ``out_dir/qc/{slide_id}.png`` (tissue
    and tile outlines, see :func:`tile_overlay`). The cache key includes OpenSlide's content hash of
    the slide (else its size and mtime), the annotation's hash, every tiling parameter and the
    :func:`~mtlutils.core.provenance.code_version` of :data:`TILING_CODE`. Unreadable slides are
    skipped and named in ``index.attrs["skipped_slides"]`` (see the module docstring). MPP per slide: the manifest's ``mpp`` column
    when filled (overrides metadata), else the slide's metadata, else ``mpp_override`` (used only for
    slides lacking MPP metadata, like ``--mpp-override`` on the command line). ``workers`` > 1 tiles slides in
    worker processes (:func:`~mtlutils.core.parallel.parallel_map`, 1 thread each).
    See :func:`~mtlutils.data.tiling.tile_slide` for the tiling parameters and the module docstring for
    labels.
    """
    workers = check_workers(workers)
    df = _as_manifest(manifest)
    out = mio.ensure_writable_dir(out_dir)
    params = {
        "tile_mpp": float(tile_mpp),
        "tile_px": int(tile_px),
        "tissue_threshold": float(tissue_threshold),
        "tumour_min": float(tumour_min),
        "normal_max": float(normal_max),
        "max_tiles_per_slide": None if max_tiles_per_slide is None else int(max_tiles_per_slide),
        "seed": int(seed),
        "mask_mpp": float(mask_mpp),
    }
    rows = [{k: _clean(v) for k, v in r.items()} for r in df.to_dict(orient="records")]
    errors: dict[str, SlideError] = {}
    for row in rows:  # before any tiling: a missing MPP raises, a slide that does not open is set aside
        error = _check_slide_opens(row, mpp_override)
        if error is not None:
            errors[row["slide_id"]] = error
    code = code_version(*TILING_CODE, follow_imports=True)
    tasks = [(r, str(out), params, mpp_override, code) for r in rows if r["slide_id"] not in errors]
    results = list(
        parallel_map(
            _tile_one_slide, tasks, workers=workers, desc="tiling slides", show_progress=show_progress
        )
    )
    errors.update({r["slide_id"]: r["error"] for r in results if "error" in r})
    skipped = _report_bad_slides(errors, rows)
    good = df[~df["slide_id"].isin(list(errors))]
    index, per_slide = _build_index(good, out)
    info = {"code_version": code, "skipped_slides": skipped}
    index = _write_index(index, df, out, params, mpp_override, results, per_slide, info)
    index.attrs["skipped_slides"] = skipped
    return index


def _report_bad_slides(errors: dict[str, SlideError], rows: list[dict[str, Any]]) -> dict[str, str]:
    """``{slide_id: one-line reason}`` of the slides set aside, with a warning; raise when all failed."""
    reasons = {sid: (str(exc).splitlines() or [type(exc).__name__])[0] for sid, exc in errors.items()}
    if not reasons:
        return {}
    if len(reasons) == len(rows):
        if len(rows) == 1:
            raise next(iter(errors.values()))
        first, reason = next(iter(reasons.items()))
        raise SlideError(
            f"none of the {len(rows)} slides could be tiled; {first}: {reason} (and {len(rows) - 1} more)"
        )
    lines = "\n".join(f"  {sid}: {reason}" for sid, reason in reasons.items())
    warnings.warn(
        f"{len(reasons)} of {len(rows)} slide(s) skipped, the others were tiled; fix or remove these "
        f"rows of the manifest and run again to include them:\n{lines}",
        UserWarning,
        stacklevel=3,
    )
    return reasons


_SLIDE_SUMMARY = (
    "n_tiles",
    "n_grid",
    "n_tissue",
    "n_ambiguous_dropped",
    "sampling",
    "mpp",
    "mpp_source",
    "level",
    "read_px",
    "actual_tile_mpp",
)


def _build_index(df: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The patch index (one row per tile of every slide file) and a per-slide summary."""
    frames, per_slide = [], {}
    for row in df.to_dict(orient="records"):
        arrays, attrs = hdf5.read_h5(out / f"{row['slide_id']}.h5", keys=list(_COORD_DATASETS))
        per_slide[row["slide_id"]] = {k: attrs.get(k) for k in _SLIDE_SUMMARY}
        frame = pd.DataFrame(arrays)
        for col in _SLIDE_META:
            frame[col] = row.get(col)
        frame["mpp"] = attrs["mpp"]
        frame["row"] = np.arange(len(frame), dtype=np.int64)
        frame["file"] = f"{row['slide_id']}.h5"
        frames.append(frame)
    index = pd.concat(frames, ignore_index=True)
    first = list(_SLIDE_META) + [
        "x_px",
        "y_px",
        "x_um",
        "y_um",
        "tissue_fraction",
        "tumour_fraction",
        "label",
        "row",
        "file",
    ]
    return index[first + [c for c in index.columns if c not in first]], per_slide


def _write_index(
    index: pd.DataFrame,
    df: pd.DataFrame,
    out: Path,
    params: dict[str, Any],
    mpp_override: float | None,
    results: list[dict[str, Any]],
    per_slide: dict[str, dict[str, Any]],
    info: dict[str, Any],
) -> pd.DataFrame:
    with mio.atomic_path(out / "index.csv") as tmp:
        index.to_csv(tmp, index=False)
    summary = {
        "parameters": {**params, "mpp_override": mpp_override},
        "manifest": df.attrs.get("manifest_path"),
        "code_version": info["code_version"],  # of TILING_CODE
        "n_slides": int(len(df) - len(info["skipped_slides"])),
        "n_patches": int(len(index)),
        "n_slides_skipped": int(sum(r.get("skipped", False) for r in results)),  # cache reused
        "skipped_slides": info["skipped_slides"],  # unreadable: {slide_id: reason}, not in the dataset
        "patches_per_split": {str(k): int(v) for k, v in index["split"].value_counts().sort_index().items()},
        "labels": {
            "tumour": int((index["label"] == 1).sum()),
            "normal": int((index["label"] == 0).sum()),
            "unknown": int(index["label"].isna().sum()),
        },
        # True when max_tiles_per_slide subsampling changed class proportions (see sampling_weight)
        "sampled": any(info.get("sampling") for info in per_slide.values()),
        "slides": per_slide,
    }
    mio.atomic_write_json(out / "dataset.json", summary)
    return index
