"""Cache provenance: every cached artifact is reused with the same parameters and code, rebuilt otherwise."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_sweep import write_fake_cohort

from mtlutils import data
from mtlutils import synthetic as syn
from mtlutils.bags import BagCohortConfig, build_bag_cohort
from mtlutils.bags import features as bag_features
from mtlutils.concepts import extract as concept_extract
from mtlutils.core import hdf5, provenance
from mtlutils.data import cohort as tiling_cohort
from mtlutils.data import pyramid
from mtlutils.experiments import sweep as sweep_mod
from mtlutils.mil import MILTrainConfig
from mtlutils.synthetic import cohort as syn_cohort


def _stamps(folder: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob(pattern))}


def _other_code(*modules: object, follow_imports: bool = False) -> str:
    return "edited-code"


# ---------------------------------------------------------------------------------------------- helper


def test_code_version_follows_the_source(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("x = 1\n")
    first = provenance.code_version(source)
    assert first == provenance.code_version(str(source)) and len(first) == 12
    source.write_text("x = 2\n")
    assert provenance.code_version(source) != first
    assert provenance.code_version() == provenance.code_version(Path(provenance.__file__).parents[1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        provenance.code_version(tmp_path / "gone.py")


def test_closure_holds_what_computes_an_artifact_and_nothing_else():
    tiling = provenance.module_closure("mtlutils.data.cohort")
    assert {"mtlutils.data.tiling", "mtlutils.data.wsi", "mtlutils.core.hdf5"} <= set(tiling)
    assert not any(
        m.startswith(("mtlutils.plotting", "mtlutils.concepts", "mtlutils.synthetic")) for m in tiling
    )
    concepts = provenance.module_closure("mtlutils.concepts.extract")
    assert "mtlutils.concepts.segment" in concepts and "mtlutils.plotting" not in concepts
    bags = provenance.module_closure("mtlutils.bags.features")
    assert {"mtlutils.synthetic.render", "mtlutils.bags.encoders"} <= set(bags)
    assert "mtlutils.synthetic.card" not in bags and "mtlutils" not in bags


def test_source_hash_is_shared_with_the_encoders():
    from mtlutils.bags import encoders

    assert encoders._source_hash is provenance.source_hash
    assert len(provenance.source_hash(provenance.code_version, 3)) == 12


# ------------------------------------------------------------------------------------- synthetic cohort


def test_synthetic_cohort_reused_or_rebuilt(tmp_path, monkeypatch):
    kwargs = dict(slides_per_center=1, size_px=512, seed=0, show_progress=False)
    syn.generate_cohort(tmp_path, **kwargs)
    slides = tmp_path / "slides"
    first = _stamps(slides, "*.tiff")
    recorded = json.loads((tmp_path / "cohort.json").read_text())["parameters"]
    assert recorded["code_version"] == provenance.code_version(
        *syn_cohort.GENERATOR_CODE, follow_imports=True
    )

    syn.generate_cohort(tmp_path, **kwargs)
    assert _stamps(slides, "*.tiff") == first  # same parameters and code: nothing rendered

    syn.generate_cohort(tmp_path, **{**kwargs, "seed": 1})  # other parameter: rebuilt
    second = _stamps(slides, "*.tiff")
    assert second.keys() == first.keys() and all(second[k] != first[k] for k in first)
    assert json.loads((tmp_path / "cohort.json").read_text())["parameters"]["seed"] == 1

    monkeypatch.setattr(syn_cohort, "code_version", _other_code)  # other code: rebuilt
    syn.generate_cohort(tmp_path, **{**kwargs, "seed": 1})
    third = _stamps(slides, "*.tiff")
    assert all(third[k] != second[k] for k in second)
    assert json.loads((tmp_path / "cohort.json").read_text())["parameters"]["code_version"] == "edited-code"


def test_synthetic_cohort_with_fewer_slides_drops_the_old_ones(tmp_path):
    syn.generate_cohort(tmp_path, slides_per_center=2, size_px=512, show_progress=False)
    manifest = syn.generate_cohort(tmp_path, slides_per_center=1, size_px=512, show_progress=False)
    assert sorted(p.stem for p in (tmp_path / "slides").glob("*.tiff")) == sorted(manifest["slide_id"])


# ------------------------------------------------------------------------------ patches and concepts


@pytest.fixture
def patch_manifest(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(("train", "test")):
        rgb = (np.array([215, 125, 180]) + rng.integers(-15, 16, (448, 448, 3))).clip(0, 255).astype(np.uint8)
        pyramid.write_pyramidal_tiff(tmp_path / f"s{i}.tiff", rgb, mpp=0.5)
        rows.append(
            {"slide_id": f"s{i}", "patient_id": f"p{i}", "center": "A", "split": split, "path": f"s{i}.tiff"}
        )
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv"


def test_patch_files_reused_or_rebuilt(patch_manifest, tmp_path, monkeypatch):
    out = tmp_path / "patches"
    data.tile_cohort(patch_manifest, out, show_progress=False)
    first = _stamps(out, "*.h5")
    info = json.loads((out / "dataset.json").read_text())
    code = provenance.code_version(*tiling_cohort.TILING_CODE, follow_imports=True)
    assert info["code_version"] == code and info["n_slides_skipped"] == 0

    data.tile_cohort(patch_manifest, out, show_progress=False)
    assert _stamps(out, "*.h5") == first
    assert json.loads((out / "dataset.json").read_text())["n_slides_skipped"] == 2

    data.tile_cohort(patch_manifest, out, tile_px=112, show_progress=False)  # other parameter
    second = _stamps(out, "*.h5")
    assert all(second[k] != first[k] for k in first)
    assert json.loads((out / "dataset.json").read_text())["n_slides_skipped"] == 0

    monkeypatch.setattr(tiling_cohort, "code_version", _other_code)  # other code
    data.tile_cohort(patch_manifest, out, tile_px=112, show_progress=False)
    assert all(p.stat().st_mtime_ns != second[p.name] for p in out.glob("*.h5"))
    assert hdf5.read_h5_attrs(out / "s0.h5")["cache_key"]["code_version"] == "edited-code"


@pytest.mark.filterwarnings("ignore:.*left out of the scaler:UserWarning")  # plain pink slides: no nuclei
def test_concepts_reused_or_rebuilt(patch_manifest, tmp_path, monkeypatch):
    from mtlutils.concepts import DEFAULT_PARAMS

    out = tmp_path / "patches"
    data.tile_cohort(patch_manifest, out, show_progress=False)
    cache = out / concept_extract.CACHE_DIR
    concept_extract.extract_patch_dir_concepts(out)
    first = _stamps(cache, "*.h5")
    code = provenance.code_version(*concept_extract.CONCEPTS_CODE, follow_imports=True)
    assert hdf5.read_h5_attrs(cache / "s0.h5")["cache_key"]["code_version"] == code

    concept_extract.extract_patch_dir_concepts(out)
    assert _stamps(cache, "*.h5") == first

    other = dataclasses.replace(DEFAULT_PARAMS, smooth_um=0.7)
    concept_extract.extract_patch_dir_concepts(out, params=other)  # other parameter
    second = _stamps(cache, "*.h5")
    assert all(second[k] != first[k] for k in first)

    monkeypatch.setattr(concept_extract, "code_version", _other_code)  # other code
    concept_extract.extract_patch_dir_concepts(out, params=other)
    assert all(p.stat().st_mtime_ns != second[p.name] for p in cache.glob("*.h5"))


# ------------------------------------------------------------------------------------------- bags, sweep

TINY = BagCohortConfig(n_patients=10, n_external=2, tiles=(1, 2), two_slides=0.0)


def test_bag_features_reused_or_rebuilt(tmp_path, monkeypatch):
    info = build_bag_cohort(tmp_path, TINY, workers=1)
    feats = tmp_path / info["features"]
    first = _stamps(feats, "*.h5")
    assert info["code_version"] == provenance.code_version(*bag_features.BAGS_CODE, follow_imports=True)

    build_bag_cohort(tmp_path, TINY, workers=1)
    assert _stamps(feats, "*.h5") == first

    other = BagCohortConfig(n_patients=10, n_external=2, tiles=(1, 2), two_slides=0.0, seed=1)
    build_bag_cohort(tmp_path, other, workers=1)  # other parameter
    second = _stamps(feats, "*.h5")
    assert all(second[k] != first[k] for k in first if k in second)

    monkeypatch.setattr(bag_features, "code_version", _other_code)  # other code
    again = build_bag_cohort(tmp_path, other, workers=1)
    assert again["code_version"] == "edited-code"
    assert all(p.stat().st_mtime_ns != second[p.name] for p in feats.glob("*.h5"))


def test_sweep_jobs_reused_or_rebuilt(tmp_path, monkeypatch):
    bags = write_fake_cohort(tmp_path / "bags", n_internal=12, n_external=4)
    fast = MILTrainConfig(epochs=1, patience=1)
    kwargs = dict(methods=["naive/none"], n_folds=2, out_dir=tmp_path / "sweep", workers=1)
    assert sweep_mod.run_sweep(bags, train_config=fast, **kwargs).computed == 4
    assert sweep_mod.run_sweep(bags, train_config=fast, **kwargs).computed == 0
    slower = MILTrainConfig(epochs=2, patience=1)
    assert sweep_mod.run_sweep(bags, train_config=slower, **kwargs).computed == 4  # other parameter
    monkeypatch.setattr(sweep_mod, "code_version", _other_code)
    assert sweep_mod.run_sweep(bags, train_config=slower, **kwargs).computed == 4  # other code
    info = json.loads((bags / "cohort.json").read_text())
    info["code_version"] = "other-bags"  # the bag cohort rebuilt by other code: jobs retrained too
    (bags / "cohort.json").write_text(json.dumps(info))
    assert sweep_mod.run_sweep(bags, train_config=slower, **kwargs).computed == 4
