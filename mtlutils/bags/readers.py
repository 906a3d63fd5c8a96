"""Readers of bag feature files (STAMP or CLAM ``.h5``) with a clinical and a slide table: one bag per patient.

A *clinical table* has one row per patient (``patient_id``, or STAMP's ``PATIENT``, or ``case_id``) and
the target columns; a *slide table* maps slides to patients (``slide_id`` / ``FILENAME`` / ``slide``, and
the patient column; an optional ``filename`` names the feature file, default ``<slide>.h5``). All
slides of a patient form one bag. Every file must come from the same extractor (``extractor``
attribute, when present) with the same feature dimension; a bag with zero tiles is an error naming
the slide. Patients without any slide in the slide table are dropped (listed in ``BagSet.dropped``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

PATIENT_COLUMNS = ("patient_id", "PATIENT", "case_id", "patient")
SLIDE_COLUMNS = ("slide_id", "FILENAME", "slide", "slide_name")
FEATURE_KEYS = ("feats", "features")  # STAMP, CLAM


@dataclass
class BagSet:
    """Bags of one cohort: per patient a (n_tiles, d) float32 array (its slides' tiles concatenated),
    the tiles' slide ids and coordinates (µm), and the targets (``y``: 0/1 biomarker; ``tme``: the
    regression target, NaN where missing). ``center`` and ``cohort`` per patient when known."""

    patients: np.ndarray
    feats: list[np.ndarray]
    tile_slides: list[np.ndarray]
    coords: list[np.ndarray]
    y: np.ndarray
    tme: np.ndarray
    center: np.ndarray
    cohort: np.ndarray
    extractor: str
    dim: int
    dropped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patients)

    def subset(self, rows: np.ndarray | list[int]) -> BagSet:
        """The bags at positions ``rows``."""
        rows = np.asarray(rows, dtype=int)
        return BagSet(
            self.patients[rows],
            [self.feats[i] for i in rows],
            [self.tile_slides[i] for i in rows],
            [self.coords[i] for i in rows],
            self.y[rows],
            self.tme[rows],
            self.center[rows],
            self.cohort[rows],
            self.extractor,
            self.dim,
        )

    def where(self, cohort: str) -> BagSet:
        """The bags of ``cohort`` ("internal" / "external")."""
        return self.subset(np.flatnonzero(self.cohort == cohort))

    @property
    def n_tiles(self) -> np.ndarray:
        return np.array([len(f) for f in self.feats])


def _column(table: pd.DataFrame, names: tuple[str, ...], what: str, source: str) -> str:
    for name in names:
        if name in table.columns:
            return name
    raise ValueError(
        f"{source} has no {what} column (one of {list(names)}); its columns are {list(table.columns)}"
    )


def read_feature_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(feats (n, d) float32, coords (n, 2), attributes) of a STAMP (``feats``) or CLAM (``features``) file."""
    import h5py

    from mtlutils.core.hdf5 import read_h5_attrs

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist; encode the slide first (mtlutils bags)")
    with h5py.File(path, "r") as h5:
        key = next((k for k in FEATURE_KEYS if k in h5), None)
        if key is None:
            raise ValueError(
                f"{path} has no 'feats' (STAMP) or 'features' (CLAM) dataset; it holds {sorted(h5)}"
            )
        feats = np.asarray(h5[key][()], dtype=np.float32)
        if feats.ndim == 3 and feats.shape[0] == 1:  # CLAM sometimes stores (1, n, d)
            feats = feats[0]
        coords = (
            np.asarray(h5["coords"][()], dtype=np.float64) if "coords" in h5 else np.zeros((len(feats), 2))
        )
    if feats.ndim != 2:
        raise ValueError(f"{path}: features must be (n_tiles, d), got shape {feats.shape}")
    return feats, coords, read_h5_attrs(path)


def _binary(values: pd.Series, target: str, source: str) -> np.ndarray:
    present = values.dropna()
    classes = sorted(present.unique().tolist(), key=str)
    if len(classes) < 2:
        raise ValueError(
            f"target {target!r} in {source} is constant ({classes}); a classifier needs two classes"
        )
    if len(classes) > 2:
        raise ValueError(f"target {target!r} in {source} has {len(classes)} values {classes[:5]}; expected 2")
    if set(classes) <= {0, 1}:
        return values.to_numpy(dtype=float)
    return values.map({classes[0]: 0.0, classes[1]: 1.0}).to_numpy(dtype=float)


def load_bags(
    feature_dir: str | Path,
    clinical: str | Path | pd.DataFrame,
    slides: str | Path | pd.DataFrame,
    target: str = "biomarker",
    regression: str | None = "tme_score",
) -> BagSet:
    """One bag per patient of ``clinical`` from the feature files in ``feature_dir`` (see module doc)."""
    feature_dir = Path(feature_dir)
    csrc = str(clinical) if not isinstance(clinical, pd.DataFrame) else "the clinical table"
    ssrc = str(slides) if not isinstance(slides, pd.DataFrame) else "the slide table"
    clin = clinical if isinstance(clinical, pd.DataFrame) else pd.read_csv(clinical)
    table = slides if isinstance(slides, pd.DataFrame) else pd.read_csv(slides)
    pcol = _column(clin, PATIENT_COLUMNS, "patient", csrc)
    if target not in clin.columns:
        raise ValueError(
            f"target column {target!r} is missing from {csrc}; its columns are {list(clin.columns)}"
        )
    if regression is not None and regression not in clin.columns:
        raise ValueError(
            f"regression column {regression!r} is missing from {csrc}; pass regression=None to skip it"
        )
    clin = clin.dropna(subset=[target]).drop_duplicates(subset=[pcol])
    y = _binary(clin[target], target, csrc)
    tme = clin[regression].to_numpy(dtype=float) if regression else np.full(len(clin), np.nan)
    if regression and np.nanstd(tme) == 0:
        raise ValueError(f"regression target {regression!r} in {csrc} is constant; it cannot be learned")
    spcol = _column(table, PATIENT_COLUMNS, "patient", ssrc)
    scol = _column(table, SLIDE_COLUMNS, "slide", ssrc)
    by_patient = {str(k): g for k, g in table.groupby(table[spcol].astype(str))}
    out: dict[str, list] = {"patients": [], "feats": [], "slides": [], "coords": [], "rows": []}
    dropped: list[str] = []
    extractor, dim, first = None, None, None
    for row, patient in enumerate(clin[pcol].astype(str)):
        if patient not in by_patient:
            dropped.append(patient)
            continue
        parts, sl, co = [], [], []
        for s in by_patient[patient].itertuples(index=False):
            slide = str(getattr(s, scol))
            name = getattr(s, "filename", None) if "filename" in table.columns else None
            path = feature_dir / (str(name) if isinstance(name, str) else f"{Path(slide).stem}.h5")
            feats, coords, attrs = read_feature_file(path)
            if len(feats) == 0:
                raise ValueError(
                    f"slide {slide} of patient {patient} has zero tiles ({path}); drop it from {ssrc}"
                )
            ex = str(attrs.get("extractor", "unknown"))
            if dim is None:
                extractor, dim, first = ex, feats.shape[1], path
            elif feats.shape[1] != dim:
                raise ValueError(
                    f"{path} has {feats.shape[1]}-d features but {first} has {dim}-d; re-encode it"
                )
            elif ex != extractor:
                raise ValueError(f"{path} was encoded by {ex!r}, {first} by {extractor!r}; use one encoder")
            parts.append(feats)
            sl.append(np.full(len(feats), slide, dtype=object))
            co.append(coords)
        out["patients"].append(patient)
        out["feats"].append(np.concatenate(parts))
        out["slides"].append(np.concatenate(sl))
        out["coords"].append(np.concatenate(co))
        out["rows"].append(row)
    if not out["patients"]:
        raise ValueError(f"no patient of {csrc} has a slide in {ssrc}; check the patient ids")
    rows = np.asarray(out["rows"], dtype=int)
    kept = clin.iloc[rows]
    return BagSet(
        patients=np.asarray(out["patients"], dtype=object),
        feats=out["feats"],
        tile_slides=out["slides"],
        coords=out["coords"],
        y=y[rows],
        tme=tme[rows],
        center=kept["center"].astype(str).to_numpy() if "center" in kept else np.full(len(rows), "?"),
        cohort=kept["cohort"].astype(str).to_numpy() if "cohort" in kept else np.full(len(rows), "internal"),
        extractor=str(extractor),
        dim=int(dim),
        dropped=dropped,
    )


def load_bag_cohort(root: str | Path) -> BagSet:
    """The bags of a cohort written by :func:`mtlutils.bags.build_bag_cohort` (both cohorts)."""
    import json

    root = Path(root)
    info_path = root / "cohort.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{info_path} not found; build the bags first (mtlutils bags --out {root})")
    info = json.loads(info_path.read_text())
    return load_bags(root / info["features"], root / "clinical.csv", root / "slides.csv")
