"""Render and encode the bag cohort: one STAMP-layout HDF5 feature file per slide, cached and resumable.

Layout of ``out_dir``::

    cohort.json                 settings, their key, the encoder, timings
    clinical.csv                patient_id, center, cohort, biomarker, tme_score (NaN for the external cohort)
    slides.csv                  slide_id, patient_id, center, n_tiles, filename (the slide table)
    truth/patients.csv          the true TME score of every patient (external ones included)
    truth/tiles.csv             per tile: tumour (0/1), tme_tile, lymphocytes and their density per mm²
    features/<encoder>/<slide_id>.h5

Each feature file holds ``feats`` (n, d) float32, ``coords`` (n, 2) tile corners in µm, ``coords_px``
(n, 2) level-0 px, the tiles' ground truth (``truth_*``), and the attributes ``extractor``,
``code_hash``, ``unit="um"``, ``tile_size_um``, ``tile_size_px``, ``mpp``, ``slide_id``, ``patient_id``
and ``key`` (settings + slide + encoder + the code version of :data:`BAGS_CODE`): a file with the same
key is skipped, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.bags.cohort import BagCohortConfig, plan_bag_cohort
from mtlutils.bags.encoders import DEFAULT_ENCODER, get_encoder
from mtlutils.core.hdf5 import create_h5_dataset, h5_writer, read_h5, read_h5_attrs
from mtlutils.core.io import atomic_write_json, atomic_write_text, ensure_writable_dir
from mtlutils.core.parallel import parallel_map
from mtlutils.core.provenance import code_version
from mtlutils.core.runtime import cpu_count

#: Root of the code that renders and encodes a slide's tiles: its :func:`code_version` with every mtlutils
#: module it imports (plan, encoders, synthetic rendering …) is part of each feature file's key.
BAGS_CODE = ("mtlutils.bags.features",)
TRUTH_KEYS = ("truth_tumour", "truth_tme", "truth_lymphocytes", "truth_lymph_per_mm2")
#: feature-file dataset -> column of ``truth/tiles.csv`` (the tile's tumour fraction is 0 or 1: a tumour
#: tile lies wholly inside a tumour region)
TRUTH_COLUMNS = {
    "truth_tumour": "tumour_fraction",
    "truth_lymphocytes": "lymphocytes",
    "truth_lymph_per_mm2": "lymph_per_mm2",
}


def encoder_dir_name(encoder: str) -> str:
    """Folder name of an encoder's feature files (``timm:vit_small`` -> ``timm-vit_small``)."""
    return encoder.replace(":", "-").replace("/", "-")


def _slide_key(cohort_key: str, slide_id: str, encoder: str, code_hash: str) -> str:
    return hashlib.sha256(f"{cohort_key}|{slide_id}|{encoder}|{code_hash}".encode()).hexdigest()[:16]


def render_tiles(tiles: pd.DataFrame, center: str, cfg: BagCohortConfig) -> tuple[np.ndarray, np.ndarray]:
    """Render a slide's tiles with :func:`mtlutils.synthetic.render_patch`: ((n, px, px, 3) uint8, (n,)
    number of lymphocytes of each tile)."""
    from mtlutils.synthetic import render_patch

    images = np.empty((len(tiles), cfg.tile_px, cfg.tile_px, 3), np.uint8)
    lymph = np.zeros(len(tiles), np.int64)
    for i, t in enumerate(tiles.itertuples(index=False)):
        img, nuclei = render_patch(
            center, bool(t.tumour), cfg.tile_px, cfg.mpp, int(t.seed), float(t.tme_tile), float(t.grade)
        )
        images[i], lymph[i] = img, int((nuclei["type"] == "lymphocyte").sum())
    return images, lymph


def _cached_truth(target: Path, key: str) -> dict[str, np.ndarray] | None:
    """The ground truth stored in a slide's feature file when it was written with ``key``, else None."""
    if target.is_file():
        try:
            if read_h5_attrs(target).get("key") == key:
                return read_h5(target, keys=list(TRUTH_KEYS))[0]
        except OSError:
            pass  # unreadable: to be written again
    return None


def encode_slide(
    slide: dict[str, Any],
    tiles: pd.DataFrame,
    cfg: BagCohortConfig,
    encoder: str,
    encoder_path: str | None,
    path: str,
    cohort_key: str,
) -> dict[str, np.ndarray]:
    """Render, encode and write one slide's feature file (skipped when present with the same key);
    return its tiles' ground truth."""
    enc = get_encoder(encoder, encoder_path)
    key = _slide_key(cohort_key, slide["slide_id"], encoder, enc.code_hash)
    target = Path(path)
    cached = _cached_truth(target, key)
    if cached is not None:
        return cached
    images, lymph = render_tiles(tiles, slide["center"], cfg)
    feats = enc.encode(images, cfg.mpp)
    grid = tiles[["col", "row"]].to_numpy(np.float64)
    area_mm2 = (cfg.tile_um * 1e-3) ** 2
    truth = {
        "truth_tumour": tiles["tumour"].to_numpy(np.float32),
        "truth_tme": tiles["tme_tile"].to_numpy(np.float32),
        "truth_lymphocytes": lymph,
        "truth_lymph_per_mm2": (lymph / area_mm2).astype(np.float32),
    }
    attrs = {
        "extractor": enc.name,
        "code_hash": enc.code_hash,
        "unit": "um",
        "tile_size_um": float(cfg.tile_um),
        "tile_size_px": int(cfg.tile_px),
        "mpp": float(cfg.mpp),
        "slide_id": slide["slide_id"],
        "patient_id": slide["patient_id"],
        "key": key,
    }
    with h5_writer(target, attrs) as h5:
        create_h5_dataset(h5, "feats", data=feats.astype(np.float32))
        create_h5_dataset(h5, "coords", data=grid * cfg.tile_um)
        create_h5_dataset(h5, "coords_px", data=(grid * cfg.tile_px).astype(np.int64))
        for name, values in truth.items():
            create_h5_dataset(h5, name, data=values)
    return truth


def build_bag_cohort(
    out_dir: str | Path,
    cfg: BagCohortConfig | None = None,
    encoder: str = DEFAULT_ENCODER,
    encoder_path: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Plan, render and encode the bag cohort into ``out_dir`` (layout in the module docstring); return
    the content of ``cohort.json``. Slides already encoded with the same settings are skipped."""
    cfg = cfg or BagCohortConfig()
    enc = get_encoder(encoder, encoder_path)  # an unknown name fails before any work
    code = code_version(*BAGS_CODE, follow_imports=True)
    out = ensure_writable_dir(out_dir)
    t0 = time.perf_counter()
    patients, slides, tiles = plan_bag_cohort(cfg)
    feat_dir = ensure_writable_dir(out / "features" / encoder_dir_name(encoder))
    ensure_writable_dir(out / "truth")
    by_slide = dict(tuple(tiles.groupby("slide_id", sort=False)))
    rows = slides.to_dict("records")
    tasks = [
        (
            row,
            by_slide[row["slide_id"]],
            cfg,
            encoder,
            encoder_path,
            str(feat_dir / f"{row['slide_id']}.h5"),
            f"{cfg.key()}|{code}",
        )
        for row in rows
    ]
    n_workers = workers or cpu_count()
    # slides already encoded with this key are read here; only the others start worker processes
    truths: list[dict[str, np.ndarray] | None] = [
        _cached_truth(Path(t[5]), _slide_key(t[6], t[0]["slide_id"], encoder, enc.code_hash)) for t in tasks
    ]
    todo = [i for i, truth in enumerate(truths) if truth is None]
    done = parallel_map(encode_slide, [tasks[i] for i in todo], workers=n_workers, desc=f"bags ({encoder})")
    for i, truth in zip(todo, done, strict=True):
        truths[i] = truth
    for name, column in TRUTH_COLUMNS.items():
        tiles[column] = np.concatenate([t[name] for t in truths])
    seconds = time.perf_counter() - t0
    clinical = patients[["patient_id", "center", "cohort", "biomarker", "tme_score"]].copy()
    clinical.loc[clinical["cohort"] == "external", "tme_score"] = np.nan  # hidden at deployment
    slide_table = slides[["slide_id", "patient_id", "center", "n_tiles"]].assign(
        filename=[f"{s}.h5" for s in slides["slide_id"]]
    )
    atomic_write_text(out / "clinical.csv", clinical.to_csv(index=False))
    atomic_write_text(out / "slides.csv", slide_table.to_csv(index=False))
    atomic_write_text(out / "truth" / "patients.csv", patients.to_csv(index=False))
    atomic_write_text(out / "truth" / "slides.csv", slides.to_csv(index=False))
    atomic_write_text(out / "truth" / "tiles.csv", tiles.to_csv(index=False))
    info = {
        "key": cfg.key(),
        "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "tile_size_um": cfg.tile_um,
        "encoder": encoder,
        "code_hash": enc.code_hash,
        "code_version": code,  # of BAGS_CODE
        "feature_dim": enc.dim,
        "features": str(feat_dir.relative_to(out)),
        "n_patients": int((patients["cohort"] == "internal").sum()),
        "n_external": int((patients["cohort"] == "external").sum()),
        "n_slides": len(slides),
        "n_tiles": len(tiles),
        "seconds": round(seconds, 1),
        "workers": n_workers,
    }
    atomic_write_json(out / "cohort.json", info)
    return info


def example_tiles(root: str | Path, per_class: int = 4, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Re-render ``per_class`` tiles of a biomarker-negative and a biomarker-positive internal patient
    (from the stored plan; rendering is deterministic) with titles giving their truth."""
    import json

    root = Path(root)
    info = json.loads((root / "cohort.json").read_text())
    config = dict(info["config"])
    config["tiles"], config["centers"] = tuple(config["tiles"]), tuple(config["centers"])
    cfg = BagCohortConfig(**config)
    patients = pd.read_csv(root / "truth" / "patients.csv")
    tiles = pd.read_csv(root / "truth" / "tiles.csv").merge(
        pd.read_csv(root / "truth" / "slides.csv")[["slide_id", "patient_id", "center"]], on="slide_id"
    )
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for label in (0, 1):
        pool = patients[(patients["cohort"] == "internal") & (patients["biomarker"] == label)]
        pid = pool["patient_id"].iloc[int(rng.integers(len(pool)))]
        mine = tiles[tiles["patient_id"] == pid].head(per_class)
        imgs, _ = render_tiles(mine, mine["center"].iloc[0], cfg)
        images += list(imgs)
        titles += [
            f"{pid} b={label}\n{'tumour' if t.tumour else 'normal'}, {t.lymph_per_mm2:.0f} lym/mm²"
            for t in mine.itertuples()
        ]
    return images, titles
