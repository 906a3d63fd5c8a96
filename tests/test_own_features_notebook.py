"""Notebook 04 on a researcher's own STAMP feature files: no TME column, no external cohort, no centers.

Tiny STAMP-style files (HDF5 ``feats`` + ``coords``, one per slide), a STAMP clinical table (``PATIENT``
and a string label) and slide table (``PATIENT``, ``FILENAME``): the notebook must index them, train the
single-task baseline with internal cross-validation only, and say what it skipped and why.
"""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pandas as pd
import pytest

from mtlutils.bags import readers
from mtlutils.core import runner
from mtlutils.core.hdf5 import write_h5
from mtlutils.experiments import bag_protocol

N_PATIENTS, DIM = 30, 12


def _write_stamp(root, n_patients=N_PATIENTS, seed=0, per_patient_files=False):
    """Feature files with a weak label signal in the first feature; return (feature dir, clinical, slides)."""
    rng = np.random.default_rng(seed)
    feat_dir = root / "features"
    feat_dir.mkdir(parents=True)
    patients = [f"TCGA-XX-{k:04d}" for k in range(n_patients)]
    labels = np.array([k % 2 for k in range(n_patients)])
    slides = []
    for pid, label in zip(patients, labels):
        n_slides = 1 + int(rng.integers(2))
        for s in range(n_slides):
            name = f"{pid}-01Z-0{s}-DX{s}" if per_patient_files else f"slide_{pid}_{s}"
            n = int(rng.integers(5, 10))
            feats = rng.normal(size=(n, DIM)).astype(np.float32)
            feats[:, 0] += 1.5 * label
            coords = rng.integers(0, 5000, size=(n, 2)).astype(np.float64)
            write_h5(feat_dir / f"{name}.h5", {"feats": feats, "coords": coords}, {"extractor": "ctranspath"})
            slides.append({"PATIENT": pid, "FILENAME": f"{name}.svs"})
    clinical = pd.DataFrame({"PATIENT": patients, "isMSIH": np.where(labels == 1, "MSIH", "nonMSIH")})
    return feat_dir, clinical, pd.DataFrame(slides)


def test_prepare_own_bags_lists_what_is_missing(tmp_path):
    feat_dir, clinical, slides = _write_stamp(tmp_path, n_patients=8, per_patient_files=True)
    # files named by patient need no slide table; no TME, center or cohort column
    info = readers.prepare_own_bags(feat_dir, clinical, tmp_path / "own", target="isMSIH")
    assert set(info["missing"]) == {"tme", "center", "external"}
    bags = readers.load_bag_cohort(tmp_path / "own")
    assert len(bags) == 8 and bags.dim == DIM and np.isnan(bags.tme).all()
    assert info["n_slides"] == len(slides) and info["n_tiles"] == int(bags.n_tiles.sum())
    notes = bag_protocol.skip_notes(info, ["naive/none", "uncert/pcgrad"])
    assert set(notes) == {"truth", "joint", "external", "centers", "ranking"}
    assert "auxiliary TME target" in notes["joint"] and "'tme_score'" in notes["joint"]
    # a cohort and a center column: external evaluation and the joint model are possible
    full = clinical.assign(
        tme=np.linspace(0, 1, 8), center=list("AABBCCDD"), cohort=["internal"] * 6 + ["external"] * 2
    )
    info = readers.prepare_own_bags(feat_dir, full, tmp_path / "own2", slides, "isMSIH", "tme")
    assert info["missing"] == {} and info["n_external"] == 2
    assert set(bag_protocol.skip_notes(info, ["naive/none", "uncert/pcgrad"])) == {"truth"}
    # no label at all: nothing to train, said so
    info = readers.prepare_own_bags(feat_dir, clinical, tmp_path / "own3", target="MSI")
    assert (
        "label" in bag_protocol.skip_notes(info)
        and np.isnan(readers.load_bag_cohort(tmp_path / "own3").y).all()
    )
    assert bag_protocol.skip_notes({"key": "synthetic"}, ["naive/none", "uncert/pcgrad"]) == {}


@pytest.mark.notebook
def test_notebook_04_on_own_features_without_tme_or_external(tmp_path):
    feat_dir, clinical, slides = _write_stamp(tmp_path / "mine")
    clinical.to_csv(tmp_path / "mine" / "clinical.csv", index=False)
    slides.to_csv(tmp_path / "mine" / "slides.csv", index=False)
    params = {
        "DATA_DIR": str(tmp_path / "data"),
        "FEATURES_DIR": str(feat_dir),
        "CLINICAL": str(tmp_path / "mine" / "clinical.csv"),
        "SLIDES": str(tmp_path / "mine" / "slides.csv"),
        "TARGET": "isMSIH",
        "METHODS": ["naive/none"],
        "EXTRA_METHODS": [],
        "WORKERS": 1,
    }
    out = tmp_path / "run"
    try:
        results = runner.run_notebooks(
            mode="quick", only=["04"], out_dir=out, parameters=params, show_progress=False
        )
    except runner.NotebookFailed as err:
        pytest.fail(str(err))
    assert results["notebooks"]["04_balancers_on_bags"]["status"] == "ok"
    figures = json.loads((out / "results.json").read_text())["figures"]
    assert 0.0 <= figures["04.baseline_auroc"] <= 1.0 and math.isfinite(figures["04.baseline_auroc"])
    assert figures["04.n_patients"] == N_PATIENTS
    assert [row["weighting"] for row in figures["04.table"]] == ["-"]  # the baseline only
    assert "04.baseline_ext_auroc" not in figures and "04.card" not in figures
    executed = nbformat.read(out / "04_balancers_on_bags.ipynb", as_version=4)
    shown = "\n".join(
        str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "**Skipped:**" in shown
    assert "no TME column 'tme_score'" in shown and "only the single-task [cls] baseline" in shown
    assert "internal cross-validation only" in shown and "external evaluation" in shown
    assert "no ground truth" in shown and "no per-center parts" in shown
