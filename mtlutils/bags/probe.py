"""Choosing the patch encoder by measurement: held-out linear probes of tile truth from the features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from mtlutils.bags.cohort import BagCohortConfig, plan_bag_cohort
from mtlutils.bags.encoders import ENCODERS, get_encoder
from mtlutils.bags.features import render_tiles
from mtlutils.core.parallel import parallel_map
from mtlutils.evaluation.probes import probe_r2


def _render_encode(tiles: pd.DataFrame, center: str, cfg: BagCohortConfig, names: Sequence[str]) -> tuple:
    images, lymph = render_tiles(tiles, center, cfg)
    return {name: get_encoder(name).encode(images, cfg.mpp) for name in names}, lymph


def compare_encoders(
    cfg: BagCohortConfig,
    encoders: Sequence[str] = ENCODERS,
    n_slides: int = 24,
    tiles_per_slide: int = 16,
    workers: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Render the tiles of ``n_slides`` internal slides of ``cfg``'s plan, encode them with each encoder,
    and probe (standardised ridge, 5 folds grouped by slide) the tile's lymphocyte density (per mm²) and
    tumour status: one row per encoder with the held-out R² of each and the feature dimension. The
    probe's slides have ``tiles_per_slide`` tiles each (a plan of its own, same tile size and stain)."""
    cfg = replace(cfg, tiles=(tiles_per_slide, tiles_per_slide), n_patients=max(cfg.n_patients, n_slides))
    patients, slides, tiles = plan_bag_cohort(cfg)
    internal = set(patients.loc[patients["cohort"] == "internal", "patient_id"])
    chosen = slides[slides["patient_id"].isin(internal)].sample(
        n=min(n_slides, len(slides)), random_state=seed
    )
    by_slide = dict(tuple(tiles.groupby("slide_id", sort=False)))
    tasks = [(by_slide[s.slide_id], s.center, cfg, tuple(encoders)) for s in chosen.itertuples()]
    results = list(parallel_map(_render_encode, tasks, workers=workers, desc="encoder probe"))
    groups = np.concatenate([np.full(len(by_slide[s]), s) for s in chosen["slide_id"]])
    lymph = np.concatenate([r[1] for r in results]) / (cfg.tile_um * 1e-3) ** 2
    tumour = np.concatenate([by_slide[s]["tumour"].to_numpy(float) for s in chosen["slide_id"]])
    rows = []
    for name in encoders:
        x = np.concatenate([r[0][name] for r in results])
        lym = probe_r2(x, lymph, groups=groups, seed=seed)
        tum = probe_r2(x, tumour, groups=groups, seed=seed)
        rows.append(
            {
                "encoder": name,
                "dim": x.shape[1],
                "lymph_r2": lym["r2_heldout"],
                "lymph_r2_sd": lym["r2_heldout_sd"],
                "tumour_r2": tum["r2_heldout"],
                "tumour_r2_sd": tum["r2_heldout_sd"],
                "n_tiles": lym["n"],
            }
        )
    return pd.DataFrame(rows)
