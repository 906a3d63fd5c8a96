"""The bag cohort's plan: patients, their slides and tiles, with every hidden variable (no pixels yet)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from mtlutils.synthetic import tme_from_biomarker

TRAIN_CENTERS = ("A", "B", "C")
EXTERNAL_CENTER = "D"
#: STAMP's tiles: 224 px of 256 µm (≈ 1.14 µm/px). The CPU default keeps the resolution, not the field.
STAMP_TILE_PX, STAMP_TILE_UM = 224, 256.0
PLAN_VERSION = 1


@dataclass(frozen=True)
class BagCohortConfig:
    """Sizes and hidden-variable model of the bag cohort (units in the field comments).

    Patients of the training centers A/B/C (``n_patients``) and of the unseen center D
    (``n_external``, TME hidden at deployment). A fraction ``two_slides`` of patients has two slides.
    Each slide is a bag of ``tiles`` (min, max) tiles of ``tile_px`` px at ``mpp`` µm/px (default 96 px
    at STAMP's 1.14 µm/px: a 109 µm field instead of 256 µm, for speed). The patient's TME score is
    ``tme_from_biomarker(b, tme_noise · z)`` (a noisier TME than the slide generator's, expected AUC
    for the biomarker Φ(1.8 / (1.25 √2)) ≈ 0.85); a slide's TME varies around it by N(0, slide_sd) and
    a tile's around its slide's by N(0, tile_sd), both on the logit scale. A slide's tumour fraction is
    U(tumour_lo, tumour_hi); each tile is tumour with that probability.
    """

    n_patients: int = 200
    n_external: int = 80
    two_slides: float = 0.25
    tiles: tuple[int, int] = (12, 24)
    tile_px: int = 96
    mpp: float = 1.14
    prevalence: float = 0.4  # share of biomarker-positive patients, exact per cohort
    tme_noise: float = 1.25
    slide_sd: float = 0.2
    tile_sd: float = 0.3
    tumour_lo: float = 0.2
    tumour_hi: float = 0.8
    seed: int = 0
    centers: tuple[str, ...] = field(default=TRAIN_CENTERS)
    external_center: str = EXTERNAL_CENTER

    def __post_init__(self) -> None:
        if self.n_patients < 10 or self.n_external < 0:
            raise ValueError(
                f"n_patients={self.n_patients} must be >= 10 and n_external={self.n_external} >= 0"
            )
        lo, hi = self.tiles
        if not 1 <= lo <= hi:
            raise ValueError(f"tiles={self.tiles} must be (min, max) with 1 <= min <= max")
        if not 0 < self.prevalence < 1 or not 0 <= self.two_slides <= 1:
            raise ValueError(
                f"prevalence={self.prevalence} and two_slides={self.two_slides} must be in (0, 1)"
            )

    @property
    def tile_um(self) -> float:
        """Tile side in µm."""
        return self.tile_px * self.mpp

    def key(self) -> str:
        """Hash of every setting (and the plan's version): names the cohort's caches."""
        text = json.dumps({"v": PLAN_VERSION, **asdict(self)}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def bag_cohort_config(mode: str = "default", **overrides) -> BagCohortConfig:
    """The cohort's sizes in ``mode`` (quick / default / full), with any non-None override applied."""
    from mtlutils.core.presets import preset

    sizes = preset("04", mode)
    base = {
        "n_patients": sizes["patients"],
        "n_external": sizes["external"],
        "tiles": tuple(sizes["tiles"]),
        "tile_px": sizes["tile_px"],
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "tiles" in base:
        base["tiles"] = tuple(base["tiles"])
    return BagCohortConfig(**base)


def _patients(cfg: BagCohortConfig, rng: np.random.Generator, cohort: str, n: int) -> pd.DataFrame:
    centers = cfg.centers if cohort == "internal" else (cfg.external_center,)
    n_pos = int(round(cfg.prevalence * n))
    biomarker = rng.permutation(np.r_[np.ones(n_pos, int), np.zeros(n - n_pos, int)])
    z = rng.standard_normal(n)
    prefix = "P" if cohort == "internal" else "X"
    return pd.DataFrame(
        {
            "patient_id": [f"{prefix}{i:04d}" for i in range(n)],
            "center": [centers[i % len(centers)] for i in range(n)],
            "cohort": cohort,
            "biomarker": biomarker,
            "tme_score": [tme_from_biomarker(int(b), cfg.tme_noise * float(v)) for b, v in zip(biomarker, z)],
            "n_slides": 1 + (rng.uniform(size=n) < cfg.two_slides).astype(int),
        }
    )


def plan_bag_cohort(cfg: BagCohortConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(patients, slides, tiles) tables with every hidden variable, deterministic in ``cfg``.

    patients: patient_id, center, cohort (internal / external), biomarker, tme_score (true, also for
    the external cohort: the clinical table hides it), n_slides. slides: slide_id, patient_id, center,
    tme_slide, tumour_fraction (planned), grade, n_tiles. tiles: slide_id, tile, tumour (0/1),
    tme_tile, grade, seed (render seed), col, row (grid position, tiles).
    """
    rng = np.random.default_rng([cfg.seed, 4])
    patients = pd.concat(
        [_patients(cfg, rng, "internal", cfg.n_patients), _patients(cfg, rng, "external", cfg.n_external)],
        ignore_index=True,
    )
    slides, tiles = [], []
    lo, hi = cfg.tiles
    for p in patients.itertuples(index=False):
        for k in range(int(p.n_slides)):
            slide_id = f"{p.patient_id}-S{k + 1}"
            logit = special.logit(np.clip(p.tme_score, 1e-4, 1 - 1e-4)) + cfg.slide_sd * rng.standard_normal()
            n_tiles = int(rng.integers(lo, hi + 1))
            fraction = float(rng.uniform(cfg.tumour_lo, cfg.tumour_hi))
            grade = float(rng.uniform(0.0, 1.0))
            slides.append(
                (slide_id, p.patient_id, p.center, float(special.expit(logit)), fraction, grade, n_tiles)
            )
            side = int(np.ceil(np.sqrt(n_tiles * 1.5)))
            cells = rng.choice(side * side, size=n_tiles, replace=False)
            tumour = (rng.uniform(size=n_tiles) < fraction).astype(int)
            tme = special.expit(logit + cfg.tile_sd * rng.standard_normal(n_tiles))
            tile_grade = np.clip(grade + 0.1 * rng.standard_normal(n_tiles), 0.0, 1.0)
            seeds = rng.integers(0, 2**31 - 1, size=n_tiles)
            for t in range(n_tiles):
                tiles.append(
                    (slide_id, t, int(tumour[t]), float(tme[t]), float(tile_grade[t]), int(seeds[t]))
                    + divmod(int(cells[t]), side)[::-1]
                )
    slide_cols = ["slide_id", "patient_id", "center", "tme_slide", "tumour_fraction", "grade", "n_tiles"]
    tile_cols = ["slide_id", "tile", "tumour", "tme_tile", "grade", "seed", "col", "row"]
    return patients, pd.DataFrame(slides, columns=slide_cols), pd.DataFrame(tiles, columns=tile_cols)
