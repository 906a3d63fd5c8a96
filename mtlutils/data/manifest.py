"""The cohort manifest: one CSV row per slide, read and validated (:func:`read_manifest`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ManifestError", "read_manifest", "validate_manifest", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS"]

REQUIRED_COLUMNS = ("slide_id", "patient_id", "center", "split", "path")
OPTIONAL_COLUMNS = ("annotation", "has_tumour", "biomarker", "tme_score", "mpp")


class ManifestError(ValueError):
    """A cohort manifest is missing, malformed or points to missing files."""


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a cohort manifest (CSV); return it with absolute ``path``/``annotation``.

    Required columns: ``slide_id, patient_id, center, split, path``; optional: ``annotation`` (ASAP
    XML), ``has_tumour`` (0/1), ``biomarker``, ``tme_score``, ``mpp`` (per-slide override). Relative
    paths are resolved against the manifest's folder. Every problem raises :class:`ManifestError` with
    one line naming the manifest and the fix. Missing optional columns are added (empty).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; give the path of the cohort's CSV manifest")
    text_cols = {c: str for c in ("slide_id", "patient_id", "center", "split", "path", "annotation")}
    try:
        df = pd.read_csv(path, dtype=text_cols, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"manifest {path} is not a readable CSV ({str(exc).splitlines()[0]}); save it as comma-separated UTF-8"
        ) from None
    df.attrs["manifest_path"] = str(path)
    return validate_manifest(df, base_dir=path.parent, name=f"manifest {path}")


def validate_manifest(
    df: pd.DataFrame, base_dir: str | os.PathLike, name: str = "manifest table"
) -> pd.DataFrame:
    """Validate a manifest table (see :func:`read_manifest`) and return a cleaned copy: text columns
    stripped, optional columns added, ``path``/``annotation`` made absolute against ``base_dir`` and
    checked to exist, numeric columns parsed. ``name`` starts every error message.
    """
    manifest_path = df.attrs.get("manifest_path")
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{name} lacks required column(s) {missing}; add them (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    if len(df) == 0:
        raise ManifestError(f"{name} has no rows; add one row per slide")
    for col in REQUIRED_COLUMNS:
        df[col] = df[col].astype("string").str.strip()
        empty = df[col].isna() | (df[col] == "")
        if empty.any():
            rows = (np.flatnonzero(empty.to_numpy()) + 2).tolist()[:5]
            raise ManifestError(f"{name}: column {col!r} is empty on CSV line(s) {rows}; fill it in")
        df[col] = df[col].astype(str)
    bad_ids = [s for s in df["slide_id"] if not _SAFE_ID.match(s)]
    if bad_ids:
        raise ManifestError(
            f"{name}: slide_id(s) {bad_ids[:5]} are not usable as file names; use letters, digits, '.', '_' and '-' only"
        )
    dup = df["slide_id"][df["slide_id"].duplicated()].unique().tolist()
    if dup:
        raise ManifestError(f"{name}: duplicate slide_id(s) {dup[:5]}; give every slide a unique id")
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    base = Path(base_dir)
    df["path"] = [
        str((base / p).resolve()) if not Path(p).expanduser().is_absolute() else str(Path(p).expanduser())
        for p in df["path"]
    ]
    absent = [p for p in df["path"] if not Path(p).is_file()]
    if absent:
        raise ManifestError(
            f"{name}: {len(absent)} slide file(s) not found, e.g. {absent[0]}; fix the path column (relative paths are relative to the manifest's folder)"
        )
    annotations = []
    for value in df["annotation"]:
        if pd.isna(value) or str(value).strip() == "":
            annotations.append(None)
            continue
        ann = Path(str(value).strip()).expanduser()
        ann = ann if ann.is_absolute() else (base / ann).resolve()
        if not ann.is_file():
            raise ManifestError(
                f"{name}: annotation file {ann} not found; fix the annotation column or leave it empty"
            )
        annotations.append(str(ann))
    df["annotation"] = pd.Series(annotations, index=df.index, dtype=object)
    for col in ("has_tumour", "tme_score", "mpp"):
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
        if bad.any():
            raise ManifestError(
                f"{name}: column {col!r} has non-numeric value(s) {df.loc[bad, col].tolist()[:5]}; use numbers or leave empty"
            )
        df[col] = values.astype(float)
    if not df["has_tumour"].dropna().isin([0.0, 1.0]).all():
        raise ManifestError(f"{name}: has_tumour must be 0, 1 or empty; fix the column")
    if (df["mpp"].dropna() <= 0).any():
        raise ManifestError(f"{name}: mpp must be a positive number of µm per pixel or empty; fix the column")
    df = df.reset_index(drop=True)
    df.attrs["manifest_path"] = manifest_path
    return df
