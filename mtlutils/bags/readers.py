"""Readers of bag feature files (STAMP or CLAM ``.h5``) with a clinical and a slide table: one bag per patient.

A *clinical table* has one row per patient (``patient_id``, or STAMP's ``PATIENT``, or ``case_id``) and
the target columns; a *slide table* maps slides to patients (``slide_id`` / ``FILENAME`` / ``slide``, and
the patient column; an optional ``filename`` names the feature file, default ``<slide>.h5``). All
slides of a patient form one bag. Every file must come from the same extractor (``extractor``
attribute, when present) with the same feature dimension; a bag with zero tiles is an error naming
the slide. Patients without any slide in the slide table are dropped (listed in ``BagSet.dropped``).
Without a slide table, a slide column of the clinical table (CLAM's ``slide_id``) is used, else every
file whose name is the patient id or starts with it and a separator (``TCGA-AA-3522-01Z-….h5``).

:func:`prepare_own_bags` indexes a researcher's files for notebook 04 and the sweep (``cohort.json``
beside a copy of the tables, the features stay where they are); label, TME, center and external
columns are optional there, and what is missing is listed in ``info["missing"]``.
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


def read_table(table: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A clinical or slide table: a DataFrame, or a ``.csv`` / ``.tsv`` / ``.xlsx`` (STAMP) file."""
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    if path.suffix.lower() in (".xlsx", ".xls"):
        return pd.read_excel(path)
    return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")


def _slides_from_files(feature_dir: Path, patients: pd.Series) -> pd.DataFrame:
    """slide table of the files ``<patient>.h5`` or ``<patient><separator>….h5`` in ``feature_dir``."""
    stems = sorted(p.stem for p in feature_dir.glob("*.h5"))
    if not stems:
        raise FileNotFoundError(f"{feature_dir} holds no .h5 feature files")
    rows = [
        (stem, patient, f"{stem}.h5")
        for patient in dict.fromkeys(patients.astype(str))
        for stem in stems
        if stem == patient or (stem.startswith(patient) and stem[len(patient)] in "-_. ")
    ]
    return pd.DataFrame(rows, columns=["slide_id", "patient_id", "filename"])


def slide_table(
    feature_dir: Path, clin: pd.DataFrame, slides: str | Path | pd.DataFrame | None, csrc: str
) -> tuple[pd.DataFrame, str]:
    """(slide table, its name in messages): ``slides``, else the clinical table when it has a slide
    column (CLAM), else the feature files named by patient."""
    if slides is not None:
        return read_table(slides), str(slides) if not isinstance(slides, pd.DataFrame) else "the slide table"
    if any(c in clin.columns for c in SLIDE_COLUMNS):
        return clin, csrc
    patients = clin[_column(clin, PATIENT_COLUMNS, "patient", csrc)]
    return _slides_from_files(feature_dir, patients), f"the files in {feature_dir}"


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
    slides: str | Path | pd.DataFrame | None = None,
    target: str | None = "biomarker",
    regression: str | None = "tme_score",
) -> BagSet:
    """One bag per patient of ``clinical`` from the feature files in ``feature_dir`` (see module doc);
    ``target=None``: unlabeled bags (``y`` is NaN)."""
    feature_dir = Path(feature_dir)
    csrc = str(clinical) if not isinstance(clinical, pd.DataFrame) else "the clinical table"
    clin = read_table(clinical)
    pcol = _column(clin, PATIENT_COLUMNS, "patient", csrc)
    table, ssrc = slide_table(feature_dir, clin, slides, csrc)
    if target is not None and target not in clin.columns:
        raise ValueError(
            f"target column {target!r} is missing from {csrc}; its columns are {list(clin.columns)}"
        )
    if regression is not None and regression not in clin.columns:
        raise ValueError(
            f"regression column {regression!r} is missing from {csrc}; pass regression=None to skip it"
        )
    clin = (clin if target is None else clin.dropna(subset=[target])).drop_duplicates(subset=[pcol])
    y = np.full(len(clin), np.nan) if target is None else _binary(clin[target], target, csrc)
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
    return load_bags(
        root / info["features"],
        root / "clinical.csv",
        root / "slides.csv",
        target=info.get("target", "biomarker"),
        regression=info.get("regression", "tme_score"),
    )


def _present(table: pd.DataFrame, column: str | None) -> bool:
    return column is not None and column in table.columns and table[column].notna().any()


def prepare_own_bags(
    features_dir: str | Path,
    clinical: str | Path | pd.DataFrame,
    out_dir: str | Path,
    slides: str | Path | pd.DataFrame | None = None,
    target: str | None = "biomarker",
    tme: str | None = "tme_score",
    center: str | None = "center",
    external_centers: list[str] | tuple[str, ...] | None = None,
) -> dict:
    """Index your own STAMP / CLAM feature files as a bag cohort in ``out_dir`` (what notebook 04 and
    :func:`mtlutils.experiments.sweep.run_sweep` read): ``clinical.csv`` (your table, with ``center``
    and ``cohort`` columns), ``slides.csv`` (slide → patient → file) and ``cohort.json``, whose ``key``
    changes with the tables and the files' names, sizes and times. The external cohort: a ``cohort``
    column (``internal`` / ``external``) of ``clinical``, else the patients of ``external_centers``.
    ``info["missing"]`` names what is absent (``label``, ``tme``, ``center``, ``external``) and why."""
    import hashlib
    import json

    from mtlutils.core.io import atomic_write_json, atomic_write_text, ensure_writable_dir

    if clinical is None:
        raise ValueError("your feature files need a clinical table (CLINICAL): one row per patient")
    feature_dir = Path(features_dir).resolve()
    if not feature_dir.is_dir():
        raise FileNotFoundError(f"FEATURES_DIR {feature_dir} is not a folder of .h5 feature files")
    csrc = str(clinical) if not isinstance(clinical, pd.DataFrame) else "the clinical table"
    clin = read_table(clinical).copy()
    _column(clin, PATIENT_COLUMNS, "patient", csrc)  # a patient column is required
    missing: dict[str, str] = {}
    if not _present(clin, target):
        missing["label"] = (
            f"{csrc} has no label column {target!r} (its columns: {', '.join(map(str, clin.columns))})"
        )
        target = None
    if not _present(clin, tme):
        missing["tme"] = f"{csrc} has no TME column {tme!r}"
        tme = None
    if _present(clin, center):
        clin["center"] = clin[center].astype(str)
    else:
        missing["center"] = f"{csrc} has no center column {center!r}"
        clin = clin.drop(columns=["center"], errors="ignore")
    if "cohort" in clin.columns:
        bad = sorted(set(clin["cohort"].astype(str)) - {"internal", "external"})
        if bad:
            raise ValueError(f"the cohort column of {csrc} must be internal or external, not {bad[:3]}")
    elif external_centers and "center" in clin.columns:
        ext = clin["center"].isin([str(c) for c in external_centers])
        clin["cohort"] = np.where(ext, "external", "internal")
    else:
        clin["cohort"] = "internal"
    if not (clin["cohort"] == "external").any():
        how = f"and the centers {list(external_centers)} match no patient" if external_centers else ""
        missing["external"] = f"{csrc} has no cohort column with external rows {how}".strip()
    table, ssrc = slide_table(feature_dir, clin, slides, csrc)
    bags = load_bags(feature_dir, clin, table, target=target, regression=tme)
    spcol, scol = (
        _column(table, PATIENT_COLUMNS, "patient", ssrc),
        _column(table, SLIDE_COLUMNS, "slide", ssrc),
    )
    keep = [spcol, scol] + (["filename"] if "filename" in table.columns else [])
    table = table.loc[table[spcol].astype(str).isin(bags.patients), keep].drop_duplicates()
    out = ensure_writable_dir(out_dir)
    clin_csv = clin.to_csv(index=False)
    slides_csv = table.to_csv(index=False)
    files = sorted(feature_dir.glob("*.h5"))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([clin_csv, slides_csv, stamp, target, tme]).encode()).hexdigest()[:12]
    atomic_write_text(out / "clinical.csv", clin_csv)
    atomic_write_text(out / "slides.csv", slides_csv)
    info = {
        "own": True,
        "key": key,
        "encoder": f"own:{bags.extractor}",
        "code_hash": "",
        "features": str(feature_dir),
        "target": target,
        "regression": tme,
        "missing": missing,
        "feature_dim": bags.dim,
        "n_patients": int((bags.cohort == "internal").sum()),
        "n_external": int((bags.cohort == "external").sum()),
        "n_slides": len(table),
        "n_tiles": int(bags.n_tiles.sum()),
        "dropped": bags.dropped,
    }
    atomic_write_json(out / "cohort.json", info)
    return info


def describe(info: dict, seconds: float) -> str:
    """One line on a bag cohort's ``cohort.json`` (synthetic or your own) and this run's time."""
    if not info.get("own"):
        return (
            f"{info['n_slides']} slides, {info['n_tiles']} tiles of {info['tile_size_um']:.0f} µm, "
            f"{info['feature_dim']}-d {info['encoder']} features; {seconds:.0f} s this run "
            f"({info['seconds']:.0f} s when built)"
        )
    dropped = f"; {len(info['dropped'])} patients without a feature file left out" if info["dropped"] else ""
    return (
        f"your feature files: {info['n_patients']} internal + {info['n_external']} external patients, "
        f"{info['n_slides']} slides, {info['n_tiles']} tiles, {info['feature_dim']}-d features "
        f"({info['encoder']}) from {info['features']}{dropped}; indexed in {seconds:.1f} s"
    )
