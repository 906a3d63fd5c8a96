"""Camelyon16 / Camelyon17 adapter: a cohort manifest from the challenges' folder and file-name conventions."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.core import io as mio
from mtlutils.data.manifest import ManifestError, validate_manifest

__all__ = [
    "CAMELYON16_CENTER",
    "UNKNOWN_CENTER",
    "PATIENTS_PER_CENTER",
    "NODE_STAGES",
    "camelyon_manifest",
    "write_camelyon_manifest",
]

CAMELYON16_CENTER = "camelyon16"  #: Camelyon16 is one center (its slides carry no hospital in their names)
UNKNOWN_CENTER = "unknown"  #: Camelyon17 test patients (100-199) outside a center_K folder
PATIENTS_PER_CENTER = 20  #: Camelyon17 training: patients 000-019 are center_0, ..., 080-099 center_4
N_CENTERS_17 = 5
NODE_STAGES = {"negative": 0, "itc": 1, "micro": 1, "macro": 1}  #: Camelyon17 node stage -> has_tumour

_C16 = re.compile(r"^(normal|tumou?r|test)_(\d+)$", re.IGNORECASE)
_C17 = re.compile(r"^patient_(\d+)_node_(\d+)$", re.IGNORECASE)
_C17_PATIENT = re.compile(r"^patient_(\d+)$", re.IGNORECASE)
_CENTER_DIR = re.compile(r"^center_(\d+)$", re.IGNORECASE)
_PATTERNS = {"camelyon16": _C16, "camelyon17": _C17}
_LABEL_FILES = {"camelyon16": "reference.csv", "camelyon17": "stage_labels.csv"}
_LAYOUT_HINT = (
    "expected Camelyon16 (training/normal/normal_001.tif, training/tumor/tumor_001.tif, "
    "testing/images/test_001.tif) or Camelyon17 (center_0/patient_000_node_0.tif)"
)


def _scan(root: Path) -> dict[str, list[Path]]:
    """Every visible file under ``root`` by kind: slides (.tif/.tiff), xml, csv, zip."""
    found: dict[str, list[Path]] = {"slide": [], "xml": [], "csv": [], "zip": []}
    kinds = {".tif": "slide", ".tiff": "slide", ".xml": "xml", ".csv": "csv", ".zip": "zip"}
    for p in sorted(root.rglob("*")):
        kind = kinds.get(p.suffix.lower())
        if kind and not p.name.startswith(".") and p.is_file():
            found[kind].append(p)
    return found


def _detect(root: Path, slides: list[Path], zips: list[Path], challenge: str) -> str:
    """The challenge whose file names the slides under ``root`` follow (``challenge`` checked)."""
    if challenge not in ("auto", "camelyon16", "camelyon17"):
        raise ValueError(f"challenge={challenge!r}: use 'auto', 'camelyon16' or 'camelyon17'")
    counts = {name: sum(bool(rx.match(p.stem)) for p in slides) for name, rx in _PATTERNS.items()}
    wanted = [c for c in counts if counts[c] and challenge in ("auto", c)]
    if len(wanted) == 2:
        raise ManifestError(
            f"{root} holds both Camelyon16 ({counts['camelyon16']}) and Camelyon17 ({counts['camelyon17']}) slides; "
            "point at one challenge's folder or pass challenge='camelyon16' / 'camelyon17'"
        )
    if not wanted:
        which = "Camelyon" if challenge == "auto" else challenge.capitalize()
        hint = f"; found {len(zips)} .zip file(s) (e.g. {zips[0].name}): unzip them first" if zips else ""
        raise ManifestError(f"no {which} slides found under {root} ({_LAYOUT_HINT}){hint}")
    return wanted[0]


def _slides_by_id(paths: list[Path], pattern: re.Pattern[str], root: Path) -> dict[str, Path]:
    """Slide id (file stem) -> path for the slides whose names follow ``pattern``; duplicates refused."""
    out: dict[str, Path] = {}
    seen: set[str] = set()
    for p in paths:
        if not pattern.match(p.stem):
            continue
        if p.stem.lower() in seen:
            raise ManifestError(
                f"slide {p.stem} appears twice under {root} (e.g. {p}); keep one copy of each slide"
            )
        seen.add(p.stem.lower())
        out[p.stem] = p  # not resolved: a symlinked slide keeps its place (and center folder)
    return out


def _find_one(files: list[Path], name: str, root: Path) -> Path | None:
    """The single file called ``name`` (any case) among ``files``; None when absent."""
    hits = [p for p in files if p.name.lower() == name]
    if len(hits) > 1:
        raise ManifestError(
            f"{len(hits)} files named {name} under {root} ({hits[0]}, {hits[1]}); pass labels_csv= to choose one"
        )
    return hits[0] if hits else None


def _read_reference(path: Path) -> dict[str, tuple[int, str | None]]:
    """Camelyon16 test reference (``image, class[, stage, ...]``; header optional) -> id -> (has_tumour, stage)."""
    try:
        rows = [r for r in csv.reader(path.read_text(encoding="utf-8-sig").splitlines()) if any(r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"reference CSV {path} is unreadable ({exc}); save it as UTF-8 CSV") from None
    classes = {"normal": 0, "tumor": 1, "tumour": 1}
    if rows and len(rows[0]) > 1 and rows[0][1].strip().lower() not in classes:
        rows = rows[1:]  # a header line
    out = {}
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if len(cells) < 2 or cells[1].lower() not in classes:
            raise ManifestError(
                f"reference CSV {path} row {line} {row!r}: expected 'test_NNN, Normal|Tumor[, stage]'; fix the row"
            )
        stage = cells[2].lower() if len(cells) > 2 and cells[2] else None
        out[Path(cells[0]).stem.lower()] = (classes[cells[1].lower()], stage)
    return out


def _read_stage_labels(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Camelyon17 ``stage_labels.csv`` (``patient, stage``) -> (node slide id -> stage, patient id -> pN stage)."""
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True).fillna("")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"stage CSV {path} is not a readable CSV ({str(exc).splitlines()[0]}); use the challenge's stage_labels.csv"
        ) from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    if not {"patient", "stage"} <= set(table.columns):
        raise ManifestError(
            f"stage CSV {path} needs columns 'patient, stage' (has {list(table.columns)}); use the challenge's stage_labels.csv"
        )
    table = table[table["patient"].str.strip() != ""]
    nodes, patients = {}, {}
    lines = table.index + 2  # CSV line numbers (header is line 1)
    for line, name, stage in zip(lines, table["patient"].str.strip(), table["stage"].str.strip()):
        stem, suffix = Path(name).stem.lower(), Path(name).suffix.lower()
        if suffix == ".zip" and _C17_PATIENT.match(stem):
            patients[stem] = stage
        elif suffix in (".tif", ".tiff") and _C17.match(stem):
            if stage.lower() not in NODE_STAGES:
                raise ManifestError(
                    f"stage CSV {path} line {line}: stage {stage!r} of {name} is not one of {', '.join(NODE_STAGES)}; fix the row"
                )
            nodes[stem] = stage.lower()
        else:
            raise ManifestError(
                f"stage CSV {path} line {line}: {name!r} is neither patient_PPP.zip nor patient_PPP_node_N.tif; fix the row"
            )
    return nodes, patients


def _center_folder(path: Path, root: Path) -> int | None:
    """K of the nearest ``center_K`` folder between ``root`` and the slide, or None."""
    for parent in path.relative_to(root).parents:
        match = _CENTER_DIR.match(parent.name)
        if match:
            return int(match.group(1))
    return None


def _camelyon16_rows(slides: dict[str, Path], reference: Path | None) -> list[dict[str, Any]]:
    """Manifest rows of Camelyon16: one patient and one center per slide; labels from names / reference."""
    labels = _read_reference(reference) if reference else {}
    rows = []
    for sid, path in slides.items():
        kind = _C16.match(sid).group(1).lower()  # type: ignore[union-attr]
        if kind == "test":
            has_tumour, stage = labels.get(sid.lower(), (np.nan, None))
        else:
            has_tumour, stage = (0 if kind == "normal" else 1), None
        rows.append(
            {
                "slide_id": sid,
                "patient_id": sid,
                "center": CAMELYON16_CENTER,
                "path": str(path.absolute()),
                "has_tumour": has_tumour,
                "stage": stage,
                "official_test": kind == "test",
            }
        )
    return rows


def _camelyon17_rows(slides: dict[str, Path], root: Path, stage_csv: Path | None) -> list[dict[str, Any]]:
    """Manifest rows of Camelyon17: center from the ``center_K`` folder, checked against patient // 20."""
    nodes, patients = _read_stage_labels(stage_csv) if stage_csv else ({}, {})
    rows = []
    for sid, path in slides.items():
        patient = int(_C17.match(sid).group(1))  # type: ignore[union-attr]
        folder = _center_folder(path, root)
        expected = patient // PATIENTS_PER_CENTER if patient < PATIENTS_PER_CENTER * N_CENTERS_17 else None
        if folder is not None and expected is not None and folder != expected:
            raise ManifestError(
                f"slide {path} is in folder center_{folder} but patient {patient:03d} belongs to center_{expected} "
                f"(Camelyon17: center = patient // {PATIENTS_PER_CENTER}); move the file or fix its name"
            )
        k = folder if folder is not None else expected
        stage = nodes.get(sid.lower())
        rows.append(
            {
                "slide_id": sid,
                "patient_id": f"patient_{patient:03d}",
                "center": f"center_{k}" if k is not None else UNKNOWN_CENTER,
                "path": str(path.absolute()),
                "has_tumour": NODE_STAGES[stage] if stage else np.nan,
                "stage": stage,
                "pn_stage": patients.get(f"patient_{patient:03d}"),
                "official_test": expected is None,
            }
        )
    return rows


def _annotations(
    xmls: list[Path], slides: dict[str, Path], pattern: re.Pattern[str], root: Path, allow_missing: bool
) -> dict[str, str]:
    """Slide id -> its lesion annotation XML (named like the slide, anywhere under ``root``)."""
    ids = {sid.lower(): sid for sid in slides}
    out: dict[str, str] = {}
    for xml in xmls:
        if not pattern.match(xml.stem):
            continue
        sid = ids.get(xml.stem.lower())
        if sid is None:
            if allow_missing:
                continue
            raise ManifestError(
                f"annotation {xml} has no slide {xml.stem}.tif under {root}; add the slide, delete the XML "
                "or pass allow_missing_slides=True to use a subset of the challenge"
            )
        if sid in out:
            raise ManifestError(f"slide {sid} has two annotation files ({out[sid]}, {xml}); keep one of them")
        out[sid] = str(xml.absolute())
    return out


def _assign_splits(
    table: pd.DataFrame,
    external_centers: Sequence[str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    keep_official_test: bool,
) -> pd.Series:
    """Patient-grouped, seeded split; see :func:`camelyon_manifest`."""
    split = pd.Series("train", index=table.index, dtype=object)
    external = table["center"].isin(list(external_centers))
    split[external] = "external"
    official = table["official_test"].astype(bool) & ~external & keep_official_test
    split[official] = "test"
    rest = table[~external & ~official]
    if rest.empty:
        return split
    by_patient = rest.groupby("patient_id").agg(center=("center", "first"), tumour=("has_tumour", "max"))
    by_patient["stratum"] = by_patient["center"] + "/" + by_patient["tumour"].fillna(-1).astype(str)
    rng = np.random.default_rng(seed)
    keys = pd.Series(0.0, index=by_patient.index)
    for _, members in sorted(by_patient.groupby("stratum").groups.items()):
        order = rng.permutation(len(members))  # systematic sampling: strata interleave in the ranking
        keys[list(members)] = (order + rng.uniform(0.25, 0.75, len(members))) / len(members)
    ranked = keys.sort_values(kind="stable").index
    n_val, n_test = round(val_fraction * len(ranked)), round(test_fraction * len(ranked))
    role = pd.Series("train", index=ranked, dtype=object)
    role[ranked[:n_val]] = "val"
    role[ranked[n_val : n_val + n_test]] = "test"
    split[rest.index] = rest["patient_id"].map(role).to_numpy()
    return split


def camelyon_manifest(
    root: str | os.PathLike,
    challenge: str = "auto",
    external_centers: Sequence[str] = (),
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float | None = None,
    keep_official_test: bool = True,
    labels_csv: str | os.PathLike | None = None,
    annotations: bool = True,
    allow_missing_slides: bool = False,
    mpp: float | None = None,
) -> pd.DataFrame:
    """A validated cohort manifest (:mod:`mtlutils.data.manifest` columns) of a Camelyon16/17 folder.

    Slides are found anywhere under ``root`` by their challenge file names. **Camelyon16**
    (``normal_NNN``, ``tumor_NNN``, ``test_NNN.tif``): one center ``camelyon16``, patient = slide,
    ``has_tumour`` from the name (normal 0, tumor 1) and, for ``test_NNN``, from ``reference.csv``
    (``image, Normal|Tumor[, stage]``). **Camelyon17** (``patient_PPP_node_N.tif``): center from the
    ``center_K`` folder, else ``patient // 20`` (a folder contradicting the number is an error;
    patients >= 100 outside a folder get ``unknown``); ``has_tumour`` from ``stage_labels.csv``
    (negative 0; itc, micro, macro 1), with the node ``stage`` and the patient's ``pn_stage`` kept.
    ``labels_csv`` overrides the search for those files. Lesion XMLs (named like their slide, in any
    folder, e.g. ``lesion_annotations/``) fill ``annotation`` unless ``annotations=False``; ``mpp``
    fills the per-slide override column.

    Split, by patient: centers in ``external_centers`` -> ``external``; the challenge's test slides
    (``test_NNN``, patients >= 100) -> ``test`` when ``keep_official_test``; the other patients are
    ranked by a ``seed``-ed systematic sample stratified by (center, tumour status), the first
    ``val_fraction`` -> ``val``, the next ``test_fraction`` -> ``test`` (``None``: 0 when official test
    slides are kept and present, else 0.2), the rest ``train``. Parameters land in ``attrs["camelyon"]``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ManifestError(
            f"Camelyon folder {root} does not exist; give the folder holding the challenge's data"
        )
    files = _scan(root)
    name = _detect(root, files["slide"], files["zip"], challenge)
    pattern = _PATTERNS[name]
    slides = _slides_by_id(files["slide"], pattern, root)
    labels_path = (
        Path(labels_csv).expanduser() if labels_csv else _find_one(files["csv"], _LABEL_FILES[name], root)
    )
    if labels_path is not None and not labels_path.is_file():
        raise ManifestError(f"labels CSV {labels_path} does not exist; fix labels_csv= or leave it out")
    if name == "camelyon16":
        rows = _camelyon16_rows(slides, labels_path)
    else:
        rows = _camelyon17_rows(slides, root, labels_path)
    table = pd.DataFrame(rows).sort_values("slide_id", kind="stable").reset_index(drop=True)
    found = _annotations(files["xml"], slides, pattern, root, allow_missing_slides) if annotations else {}
    packed = [p for p in files["zip"] if "annotation" in p.name.lower()]
    if annotations and not found and packed:
        raise ManifestError(
            f"annotations are still zipped ({packed[0]}); unzip them next to the zip or pass annotations=False"
        )
    table["annotation"] = table["slide_id"].map(found)
    negative = table["annotation"].notna() & (table["has_tumour"] == 0)
    if negative.any():
        sid = table.loc[negative, "slide_id"].iloc[0]
        raise ManifestError(
            f"annotation {found[sid]} outlines tumour but slide {sid} is labelled negative; remove the XML or fix the label"
        )
    table.loc[table["annotation"].notna(), "has_tumour"] = 1
    table["mpp"] = np.nan if mpp is None else float(mpp)

    external_centers = (external_centers,) if isinstance(external_centers, str) else tuple(external_centers)
    centers = sorted(table["center"].unique())
    unknown = sorted(set(external_centers) - set(centers))
    if unknown:
        raise ValueError(f"external_centers {unknown} are not centers of {root}; choose from {centers}")
    official = bool(keep_official_test and table["official_test"].any())
    test_fraction = (0.0 if official else 0.2) if test_fraction is None else float(test_fraction)
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: need both >= 0 with a sum below 1"
        )
    table["split"] = _assign_splits(
        table, external_centers, val_fraction, test_fraction, seed, keep_official_test
    )
    first = ["slide_id", "patient_id", "center", "split", "path", "annotation", "has_tumour", "mpp"]
    table = table[first + [c for c in table.columns if c not in first and c != "official_test"]]
    out = validate_manifest(table, base_dir=root, name=f"Camelyon manifest of {root}")
    out.attrs["camelyon"] = {
        "root": str(root.absolute()),
        "challenge": name,
        "external_centers": list(external_centers),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": test_fraction,
        "keep_official_test": bool(keep_official_test),
        "labels_csv": str(labels_path) if labels_path else None,
    }
    return out


def write_camelyon_manifest(root: str | os.PathLike, out_csv: str | os.PathLike, **kw: Any) -> Path:
    """Build :func:`camelyon_manifest` (``**kw`` are its options) and write it atomically as CSV.

    Paths under the CSV's folder are written relative to it (the cohort can move), others absolute.
    Returns the CSV path; :func:`~mtlutils.data.manifest.read_manifest` reads it back.
    """
    table = camelyon_manifest(root, **kw)
    out = Path(out_csv).expanduser()
    folder = mio.ensure_writable_dir(out.parent).absolute()

    def rel(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        path = Path(value)
        return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else value

    for col in ("path", "annotation"):
        table[col] = table[col].map(rel)
    with mio.atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return out
