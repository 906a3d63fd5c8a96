"""The cohort: its slide-level plan and splits, and the writer of slides, annotations, nuclei and manifest."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.core.parallel import parallel_map
from mtlutils.core.provenance import code_version
from mtlutils.data.units import check_mpp
from mtlutils.synthetic.centers import CenterStyle, default_centers
from mtlutils.synthetic.fields import _streams
from mtlutils.synthetic.model import (
    LYMPH_BASE_PER_MM2,
    LYMPH_TME_PER_MM2,
    NUCLEUS_PARAMS,
    STROMA_NUCLEI_PER_MM2,
    TME_NOISE,
    TME_SLOPE,
    TUMOUR_STROMA_NUCLEI_PER_MM2,
    normal_nucleus_params,
    tme_from_biomarker,
    tumour_nucleus_params,
)
from mtlutils.synthetic.settings import DEFAULT_SETTINGS, FORMAT_VERSION, GeneratorSettings, generator_hash
from mtlutils.synthetic.slide import (
    MIN_SLIDE_PX,
    MPP_FIX,
    MPP_RANGE,
    _check_int,
    _slide_hidden,
    generate_slide,
)

MANIFEST_COLUMNS = (
    "slide_id",
    "patient_id",
    "center",
    "split",
    "path",
    "has_tumour",
    "biomarker",
    "tme_score",
    "annotation",
    "nuclei",
    "mpp",
)
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
#: Root of the code that renders and writes a cohort: its :func:`code_version` with every mtlutils module
#: it imports (slide, render, nuclei, pyramid writer …) is one of the cohort's parameters.
GENERATOR_CODE = ("mtlutils.synthetic.cohort",)


def _assign_splits(rng: np.random.Generator, has_tumour: np.ndarray) -> np.ndarray:
    """train / val / test (≈ 60/20/20) for one center's slides, stratified by ``has_tumour``.

    n >= 3: at least one slide in each split (val = test = max(1, round(0.2 n))). n = 2: train, val;
    n = 1: train. Slides are ordered stratum by stratum (smaller stratum first, shuffled inside) and
    dealt to the split that is furthest behind its quota, so each stratum is split proportionally.
    """
    n = len(has_tumour)
    if n == 1:
        return np.array(["train"], dtype=object)
    if n == 2:
        quota = {"train": 1, "val": 1, "test": 0}
    else:
        n_val = max(1, int(math.floor(SPLIT_FRACTIONS["val"] * n + 0.5)))
        n_test = max(1, int(math.floor(SPLIT_FRACTIONS["test"] * n + 0.5)))
        quota = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    strata = [np.nonzero(has_tumour == v)[0] for v in (True, False)]
    strata.sort(key=len)
    order = np.concatenate([rng.permutation(s) for s in strata])
    splits = np.empty(n, dtype=object)
    dealt = dict.fromkeys(quota, 0)
    for k, i in enumerate(order):
        name = max(quota, key=lambda s: quota[s] * (k + 1) / n - dealt[s])  # ties: train, val, test
        splits[i] = name
        dealt[name] += 1
    return splits


def plan_cohort(
    slides_per_center: int = 8,
    seed: int = 0,
    confounder: bool = True,
    centers: Sequence[CenterStyle] | None = None,
    settings: GeneratorSettings | None = None,
) -> pd.DataFrame:
    """Slide-level design of a cohort, without rendering: one row per slide.

    Columns: slide_id, patient_id, center, index, split, has_tumour, biomarker, tme_score.
    Deterministic in (slides_per_center, seed, confounder, settings); see the module docstring for
    the rules. ``settings`` sets the prevalences when ``centers`` is None.
    """
    n = _check_int("slides_per_center", slides_per_center, 1, "use e.g. 8 (3 for a quick run)")
    centers = list(centers) if centers is not None else default_centers(confounder, settings)
    rows = []
    for style in centers:
        streams = _streams(int(seed), style.name, 0, kind=0)  # one per decision, reusing the stream names
        tumour_rng, biomarker_rng, tme_rng, split_rng = (
            streams[k] for k in ("hidden", "layout", "tumour", "glands")
        )
        tumour_order = tumour_rng.permutation(n)  # the same in the confounded and the control cohort
        has_tumour = np.zeros(n, bool)
        has_tumour[tumour_order[: int(math.floor(style.tumour_prevalence * n + 0.5))]] = True
        n_pos = n // 2 + (int(biomarker_rng.integers(2)) if n % 2 else 0)
        biomarker = np.zeros(n, int)
        biomarker[biomarker_rng.permutation(n)[:n_pos]] = 1
        z = tme_rng.standard_normal(n)
        if style.role == "external":
            splits = np.full(n, "external", dtype=object)
        else:
            splits = _assign_splits(split_rng, has_tumour)
        for i in range(n):
            rows.append(
                {
                    "slide_id": f"{style.name}-{i:03d}",
                    "patient_id": f"P-{style.name}-{i:03d}",
                    "center": style.name,
                    "index": i,
                    "split": splits[i],
                    "has_tumour": int(has_tumour[i]),
                    "biomarker": int(biomarker[i]),
                    "tme_score": round(tme_from_biomarker(biomarker[i], z[i]), 4),
                }
            )
    return pd.DataFrame(rows)


def _slide_files(out: Path, slide_id: str) -> dict[str, Path]:
    return {
        "path": out / "slides" / f"{slide_id}.tiff",
        "annotation": out / "annotations" / f"{slide_id}.xml",
        "nuclei": out / "nuclei" / f"{slide_id}.csv",
    }


def _write_slide(job: dict[str, Any]) -> dict[str, Any]:
    """Render one slide and write its nuclei table, annotation and TIFF (each atomically, TIFF last)."""
    from mtlutils.core.io import atomic_path
    from mtlutils.data.annotations import write_asap_xml
    from mtlutils.data.pyramid import write_pyramidal_tiff

    slide = generate_slide(
        job["index"],
        job["center"],
        bool(job["has_tumour"]),
        job["biomarker"],
        job["tme_score"],
        job["size_px"],
        job["mpp"],
        job["seed"],
        job["settings"],
    )
    files = _slide_files(Path(job["out"]), slide.slide_id)
    with atomic_path(files["nuclei"]) as tmp:
        slide.nuclei.to_csv(tmp, index=False)
    annotation = slide.polygons if slide.annotation_polygons is None else slide.annotation_polygons
    write_asap_xml(files["annotation"], annotation, group="Tumor")
    (Path(job["out"]) / "truth").mkdir(exist_ok=True)
    write_asap_xml(Path(job["out"]) / "truth" / f"{slide.slide_id}.xml", slide.polygons, group="Tumor")
    write_pyramidal_tiff(files["path"], slide.rgb, slide.mpp, tile=256)
    return {
        "slide_id": slide.slide_id,
        "tumour_fraction": slide.tumour_fraction,
        "tissue_fraction": slide.tissue_fraction,
        "n_nuclei": len(slide.nuclei),
    }


def _parameters(
    slides_per_center: int, size_px: int, mpp: float, seed: int, confounder: bool, settings: GeneratorSettings
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "generator_hash": generator_hash(settings),
        "code_version": code_version(*GENERATOR_CODE, follow_imports=True),
        "slides_per_center": slides_per_center,
        "size_px": size_px,
        "mpp": mpp,
        "seed": seed,
        "confounder": confounder,
    }


def _cohort_changed(out: Path, params: dict[str, Any]) -> bool:
    """True when ``out`` holds (part of) a cohort made with other parameters or code (it is then rebuilt);
    the in-progress marker, when present, tells what the slide files there were made with."""
    for name in (".cohort-in-progress.json", "cohort.json"):
        path = out / name
        if not path.exists():
            continue
        try:
            old = json.loads(path.read_text(encoding="utf-8")).get("parameters", {})
        except (OSError, ValueError, AttributeError):
            old = {}
        old.setdefault("generator_hash", generator_hash(DEFAULT_SETTINGS))  # written before the hash
        diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k}={a!r} there vs {b!r} now" for k, (a, b) in diff.items())
            print(f"{out} holds a cohort made with other parameters ({what}); regenerating every slide")
        return bool(diff)
    return False


def _remove_slides(out: Path, slide_ids: set[str]) -> None:
    """Delete the files of ``slide_ids`` and of every slide the previous ``cohort.json`` lists."""
    try:
        old = json.loads((out / "cohort.json").read_text(encoding="utf-8")).get("slides", [])
    except (OSError, ValueError, AttributeError):
        old = []
    for slide_id in ({s.get("slide_id") for s in old if isinstance(s, dict)} | slide_ids) - {None}:
        for path in (*_slide_files(out, str(slide_id)).values(), out / "truth" / f"{slide_id}.xml"):
            path.unlink(missing_ok=True)


def _provenance(
    params: dict[str, Any], centers: Sequence[CenterStyle], plan: pd.DataFrame, settings: GeneratorSettings
) -> dict[str, Any]:
    styles = {c.name: c for c in centers}
    slides = []
    for row in plan.itertuples(index=False):
        _, hidden = _slide_hidden(styles[row.center], int(row.index), int(params["seed"]), settings)
        slides.append(
            {
                "slide_id": row.slide_id,
                "has_tumour": int(row.has_tumour),
                "biomarker": int(row.biomarker),
                "tme_score": float(row.tme_score),
                "grades": [round(g, 4) for g in hidden["grades"]] if row.has_tumour else [],
                "target_tumour_fraction": round(hidden["target_tumour_fraction"], 4)
                if row.has_tumour
                else 0.0,
                "stain_od": np.round(hidden["stain_od"], 5).tolist(),
                "stain_strength": round(hidden["stain_strength"], 5),
                "focus_blur_um": round(hidden["focus_blur_um"], 4),
                "unannotated_foci_planned": hidden["unannotated_foci"] if row.has_tumour else 0,
            }
        )
    return {
        "generator": "mtlutils.synthetic",
        "generator_hash": generator_hash(settings),
        "generator_settings": settings.to_dict(),
        "parameters": params,
        "centers": [c.to_dict() for c in centers],
        "model": {
            "nucleus_params": NUCLEUS_PARAMS,
            "normal_nucleus_params": {
                "activity_0": normal_nucleus_params(0.0),
                "activity_1": normal_nucleus_params(1.0),
            },
            "tumour_nucleus_params": {
                "grade_0": tumour_nucleus_params(0.0),
                "grade_1": tumour_nucleus_params(1.0),
            },
            "tumour_regions": "1, 2 or 3 per tumour slide (p 0.5 / 0.3 / 0.2), grade U(0, 1) each",
            "normal_activity": "U(0, 1) per duct and per lobule",
            "tumour_area_fraction": "0.10 + 0.5 * prevalence + U(-0.08, 0.08), clipped to [0.08, 0.7]",
            "tme_score": f"sigmoid({TME_SLOPE} * (biomarker - 0.5) + {TME_NOISE} * N(0, 1))",
            "lymphocytes_per_mm2_stroma": f"{LYMPH_BASE_PER_MM2} + {LYMPH_TME_PER_MM2} * tme_score",
            "stromal_nuclei_per_mm2": {
                "normal": STROMA_NUCLEI_PER_MM2,
                "tumour": TUMOUR_STROMA_NUCLEI_PER_MM2,
            },
            "split_fractions": SPLIT_FRACTIONS,
        },
        "slides": slides,
    }


def generate_cohort(
    out_dir: str | os.PathLike,
    slides_per_center: int = 8,
    size_px: int = 2048,
    mpp: float = 0.5,
    seed: int = 0,
    confounder: bool = True,
    workers: int = 1,
    show_progress: bool = True,
    settings: GeneratorSettings | None = None,
) -> pd.DataFrame:
    """Write the synthetic cohort to ``out_dir``; return its manifest.

    Layout: ``slides/{slide_id}.tiff`` (pyramidal, OpenSlide-readable, level-0 ``mpp``),
    ``annotations/{slide_id}.xml`` (ASAP XML tumour polygons, as an annotator drew them: coarse when
    ``settings`` say so), ``truth/{slide_id}.xml`` (the exact tumour regions), ``nuclei/{slide_id}.csv``
    (ground truth), ``manifest.csv`` (columns :data:`MANIFEST_COLUMNS`, paths relative to ``out_dir``) and
    ``cohort.json`` (parameters, ``generator_hash`` and ``generator_settings``, center styles, every
    slide's hidden variables). ``settings``: :class:`GeneratorSettings` (default
    :data:`DEFAULT_SETTINGS`). Resumable: slides whose three files exist are skipped while the folder's
    recorded parameters (``cohort.json`` or the in-progress marker: arguments, ``generator_hash`` and
    the ``code_version`` of :data:`GENERATOR_CODE`) equal the new ones; otherwise the old slides' files
    are deleted and every slide is regenerated; manifest and cohort.json are written last. ``workers > 1``
    renders slides in worker processes (:func:`~mtlutils.core.parallel.parallel_map`, one thread each; in a script, call this under
    ``if __name__ == "__main__":``). The slides do not depend on ``workers``.
    """
    from mtlutils.core.io import atomic_path, atomic_write_json, ensure_writable_dir

    slides_per_center = _check_int(
        "slides_per_center", slides_per_center, 1, "use e.g. 8 (3 for a quick run)"
    )
    size_px = _check_int(
        "size_px", size_px, MIN_SLIDE_PX, f"a slide needs at least {MIN_SLIDE_PX} px (default 2048)"
    )
    mpp = check_mpp(mpp, *MPP_RANGE, fix=MPP_FIX)
    seed = _check_int("seed", seed, 0, "use a non-negative integer")
    workers = _check_int("workers", workers, 1, "use 1 (serial) or the number of cores")
    confounder = bool(confounder)
    out = ensure_writable_dir(out_dir)
    settings = DEFAULT_SETTINGS if settings is None else settings
    params = _parameters(slides_per_center, size_px, mpp, seed, confounder, settings)
    changed = _cohort_changed(out, params)
    centers = default_centers(confounder, settings)
    plan = plan_cohort(slides_per_center, seed, confounder, centers)
    if changed:  # then the files left there are all this call's: an interrupted rebuild resumes
        _remove_slides(out, set(plan["slide_id"]))
    marker = out / ".cohort-in-progress.json"
    atomic_write_json(marker, {"parameters": params})
    for sub in ("slides", "annotations", "nuclei", "truth"):
        (out / sub).mkdir(exist_ok=True)

    styles = {c.name: c for c in centers}
    jobs = [
        {
            "index": int(r.index),
            "center": styles[r.center],
            "has_tumour": int(r.has_tumour),
            "biomarker": int(r.biomarker),
            "tme_score": float(r.tme_score),
            "size_px": size_px,
            "mpp": mpp,
            "seed": seed,
            "settings": settings,
            "out": str(out),
        }
        for r in plan.itertuples(index=False)
        if not all(p.exists() for p in _slide_files(out, r.slide_id).values())
    ]

    try:  # in task order; workers == 1 (or one job) renders here, else loky processes of one thread each
        for _ in parallel_map(
            _write_slide, [(job,) for job in jobs], workers, "synthetic slides", show_progress=show_progress
        ):
            pass
    except BrokenProcessPool as exc:  # loky's TerminatedWorkerError is one
        raise RuntimeError(
            f"generate_cohort: a worker process died ({exc}); in a script, call it under "
            "`if __name__ == '__main__':`, use fewer workers (memory) or workers=1; "
            "finished slides are kept and skipped on the next call"
        ) from None

    manifest = plan.drop(columns=["index"]).copy()
    files = [_slide_files(Path("."), s) for s in manifest["slide_id"]]
    for key in ("path", "annotation", "nuclei"):
        manifest[key] = [f[key].as_posix() for f in files]
    manifest["mpp"] = mpp
    manifest = manifest[list(MANIFEST_COLUMNS)]
    with atomic_path(out / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    atomic_write_json(out / "cohort.json", _provenance(params, centers, plan, settings))
    marker.unlink(missing_ok=True)
    return manifest
