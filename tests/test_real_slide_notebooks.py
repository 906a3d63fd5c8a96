"""Bring your own slides: the real Aperio slide of ``../shared/data`` through notebooks 01-03 and 05, unlabeled.

A ``manifest.csv`` without labels (no ``annotation``, no ``has_tumour``) in ``DATA_DIR`` makes the
notebooks use that cohort (:mod:`mtlutils.data.unlabeled`): 01 tiles it and draws its tissue mask and
tile grid, 02 measures the concepts, both skip what needs labels, centers or the truth with a visible
note, and 03 and 05 stop after their set-up with a note. Skipped with a reason when the slide is absent.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from mtlutils.core import runner
from mtlutils.data import unlabeled

MAX_TILES = 6  # a few tiles keep the three notebooks well under a minute on two cores


def _outputs(path) -> str:
    """Every text and Markdown output of an executed notebook, joined."""
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                parts.append(f"ERROR {out['ename']}: {out['evalue']}")
            text = out.get("text") or out.get("data", {}).get("text/markdown") or ""
            parts.append(text if isinstance(text, str) else "".join(text))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def unlabeled_run(real_slide, tmp_path_factory):
    root = tmp_path_factory.mktemp("own-slides")
    slides = root / "cmu"
    slides.mkdir()
    pd.DataFrame(
        [{"slide_id": "CMU-1", "patient_id": "P1", "center": "CMU", "split": "test", "path": str(real_slide)}]
    ).to_csv(slides / "manifest.csv", index=False)
    out = root / "run"
    params = {
        "DATA_DIR": str(slides),
        "MAX_TILES_PER_SLIDE": MAX_TILES,
        "REAL_SLIDE": str(real_slide),
        "CONSEP_DIR": str(root / "absent"),  # the annotated-nuclei checks have their own tests
        "REAL_NUCLEI_DIR": str(root / "absent"),
    }
    try:
        results = runner.run_notebooks(
            mode="quick", only=["01", "02", "03", "05"], out_dir=out, parameters=params, show_progress=False
        )
    except runner.NotebookFailed as err:
        pytest.fail(str(err))
    return results, out, slides


@pytest.mark.notebook
def test_real_slide_rule_names_the_cohort(unlabeled_run):
    _, _, slides = unlabeled_run
    choice = unlabeled.resolve_cohort(slides)
    assert not choice.synthetic and choice.manifest == slides / "manifest.csv" and choice.name == "cmu"


@pytest.mark.notebook
def test_real_slide_tiles_and_figures(unlabeled_run):
    results, out, slides = unlabeled_run
    assert all(info["status"] == "ok" for info in results["notebooks"].values()), results["notebooks"]
    figures = results["figures"]
    assert figures["01.n_slides"] == 1 and 0 < figures["01.n_patches"] <= MAX_TILES
    assert figures["01.n_labelled_patches"] == 0
    patches = slides / "cmu-quick" / "patches"
    index = pd.read_csv(patches / "index.csv")
    assert len(index) == figures["01.n_patches"] and index["label"].isna().all()
    assert (patches / "qc" / "CMU-1.png").stat().st_size > 0, "tissue mask and tile grid (QC picture)"
    for name in (
        "01_thumbnails",
        "01_tile_grids",
        "01_patches",
        "01_stain_lab",
        "02_segmentation_overlays",
        "02_concept_distributions",
        "02_stain_effect",
        "02_real_slide_overlays",
    ):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0, name
    concepts = pd.read_csv(patches / "concepts.csv")
    assert len(concepts) == len(index)
    assert all(math.isfinite(v) and v > 0 for v in concepts["count"]), concepts["count"].tolist()
    assert all(n > 0 for n in figures["02.real_slide_nuclei_per_field"])
    assert "01.confounding" not in figures and "02.gt_spearman" not in figures and "03.table" not in figures


@pytest.mark.notebook
def test_real_slide_skip_notes(unlabeled_run):
    _, out, _ = unlabeled_run
    first = _outputs(out / "01_data_preparation.ipynb")
    second = _outputs(out / "02_concept_features.ipynb")
    third = _outputs(out / "03_multitask_adversarial_cnn.ipynb")
    fifth = _outputs(out / "05_interpretability.ipynb")
    for text in (first, second, third, fifth):
        assert "ERROR" not in text
    for note in (
        "annotation labels against the truth",
        "the cohort card",
        "the confounder report",
        "tumour rates per center",
    ):
        assert f"Skipped: {note}" in first, note
    for note in (
        "desired concepts",
        "undesired concepts",
        "agreement with the ground truth",
        "found against true nuclei",
    ):
        assert f"Skipped: {note}" in second, note
    assert "Skipped: training and evaluating the CNNs" in third
    assert "is in this cohort: the real-slide comparison is skipped" in first  # never compared with itself
    assert "Skipped: training and opening the CNNs" in fifth  # 05 stops too: nothing to train
    assert "0 labelled" in first and "0 labelled" in second
