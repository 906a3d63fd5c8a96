"""The bag cohort: plan, feature files in STAMP's layout, readers (STAMP and CLAM), card, bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from mtlutils.bags import BagCohortConfig, build_bag_cohort, get_encoder, plan_bag_cohort
from mtlutils.bags.card import bag_card, format_bag_card
from mtlutils.bags.readers import load_bag_cohort, load_bags, read_feature_file
from mtlutils.core.cli import main
from mtlutils.core.hdf5 import write_h5

TINY = BagCohortConfig(n_patients=12, n_external=4, tiles=(2, 3), two_slides=0.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    info = build_bag_cohort(root, TINY, workers=1)
    return root, info


def test_plan_is_deterministic_and_complete():
    a, b = plan_bag_cohort(TINY), plan_bag_cohort(TINY)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    patients, slides, tiles = a
    assert (patients["cohort"] == "internal").sum() == 12 and (patients["center"] == "D").sum() == 4
    assert set(patients.loc[patients["cohort"] == "internal", "center"]) == {"A", "B", "C"}
    assert patients["n_slides"].max() == 2 and patients["biomarker"].nunique() == 2
    assert slides.groupby("slide_id")["n_tiles"].first().sum() == len(tiles)
    assert tiles["tme_tile"].between(0, 1).all() and set(tiles["tumour"]) <= {0, 1}


def test_feature_files_follow_stamp_layout(cohort):
    root, info = cohort
    files = sorted((root / info["features"]).glob("*.h5"))
    assert len(files) == info["n_slides"]
    with h5py.File(files[0], "r") as h5:
        feats, coords, px = h5["feats"][()], h5["coords"][()], h5["coords_px"][()]
        attrs = dict(h5.attrs)
    assert feats.dtype == np.float32 and feats.shape[1] == info["feature_dim"] == get_encoder("stats").dim
    assert coords.shape == (len(feats), 2) and np.allclose(coords, px * TINY.mpp)
    assert attrs["unit"] == "um" and attrs["extractor"] == "stats" and attrs["code_hash"]
    assert attrs["tile_size_px"] == TINY.tile_px and np.isclose(attrs["tile_size_um"], TINY.tile_um)
    tiles = pd.read_csv(root / "truth" / "tiles.csv")
    assert {"lymph_per_mm2", "tumour_fraction", "lymphocytes"} <= set(tiles.columns)
    clinical = pd.read_csv(root / "clinical.csv")
    assert clinical.loc[clinical["cohort"] == "external", "tme_score"].isna().all()
    assert clinical.loc[clinical["cohort"] == "internal", "tme_score"].notna().all()


def test_rebuild_skips_present_files(cohort):
    root, info = cohort
    files = sorted((root / info["features"]).glob("*.h5"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = build_bag_cohort(root, TINY, workers=1)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert again["n_tiles"] == info["n_tiles"]
    assert not list(root.rglob(".*.tmp-*")), "no temporary files left"


def test_reader_makes_one_bag_per_patient(cohort):
    root, info = cohort
    bags = load_bag_cohort(root)
    assert len(bags) == 16 and bags.dim == info["feature_dim"] and bags.extractor == "stats"
    slides = pd.read_csv(root / "slides.csv")
    two = slides["patient_id"].value_counts()
    pid = two.index[two == 2][0]
    i = list(bags.patients).index(pid)
    assert len(bags.feats[i]) == slides.loc[slides["patient_id"] == pid, "n_tiles"].sum()
    assert len(set(bags.tile_slides[i])) == 2
    assert np.isnan(bags.where("external").tme).all()


def test_card_from_ground_truth(cohort):
    card = bag_card(cohort[0])
    assert card["n_patients"] == 12 and card["tme_auc_band"] == [0.8, 0.9]
    assert 0 <= card["auc_tme"] <= 1 and 0 <= card["auc_lymph"] <= 1
    assert "pre-registered band" in format_bag_card(card)


def _stamp_dir(tmp_path, dims=(8, 8), extractors=("a", "a"), n_tiles=(3, 2)):
    feat_dir = tmp_path / "feats"
    feat_dir.mkdir()
    for k, (d, ex, n) in enumerate(zip(dims, extractors, n_tiles)):
        write_h5(
            feat_dir / f"s{k}.h5",
            {"feats": np.ones((n, d), np.float32), "coords": np.zeros((n, 2))},
            {"extractor": ex},
        )
    clinical = pd.DataFrame(
        {"PATIENT": ["p0", "p1", "p2"], "msi": ["MSS", "MSIH", "MSS"], "liss": [0.1, 0.5, 0.3]}
    )
    slides = pd.DataFrame({"PATIENT": ["p0", "p1"], "FILENAME": ["s0.svs", "s1.svs"]})
    return feat_dir, clinical, slides


def test_reads_stamp_tables_and_clam_files(tmp_path):
    feat_dir, clinical, slides = _stamp_dir(tmp_path)
    bags = load_bags(feat_dir, clinical, slides, target="msi", regression="liss")
    assert list(bags.patients) == ["p0", "p1"] and bags.dropped == ["p2"]
    assert bags.y.tolist() == [1.0, 0.0]  # string classes are sorted: "MSIH" -> 0, "MSS" -> 1
    clam = tmp_path / "clam"
    clam.mkdir()
    write_h5(clam / "s0.h5", {"features": np.ones((4, 5), np.float32), "coords": np.zeros((4, 2))})
    feats, coords, _ = read_feature_file(clam / "s0.h5")
    assert feats.shape == (4, 5) and coords.shape == (4, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dims": (8, 6)}, "6-d features"),
        ({"extractors": ("a", "b")}, "encoded by 'b'"),
        ({"n_tiles": (3, 0)}, "zero tiles"),
    ],
)
def test_bad_feature_files_name_the_file(tmp_path, kwargs, message):
    feat_dir, clinical, slides = _stamp_dir(tmp_path, **kwargs)
    with pytest.raises(ValueError, match=message) as err:
        load_bags(feat_dir, clinical, slides, target="msi", regression="liss")
    assert "s1" in str(err.value)


def test_bad_tables_are_named(tmp_path):
    feat_dir, clinical, slides = _stamp_dir(tmp_path)
    with pytest.raises(ValueError, match="target column 'hrd' is missing"):
        load_bags(feat_dir, clinical, slides, target="hrd", regression=None)
    with pytest.raises(ValueError, match="is constant"):
        load_bags(feat_dir, clinical.assign(msi="MSS"), slides, target="msi", regression=None)
    with pytest.raises(ValueError, match="regression target 'liss'.*constant"):
        load_bags(feat_dir, clinical.assign(liss=1.0), slides, target="msi", regression="liss")
    with pytest.raises(FileNotFoundError, match="s9.h5"):
        load_bags(
            feat_dir, clinical, slides.assign(FILENAME=["s0.svs", "s9.svs"]), target="msi", regression=None
        )


def test_encoders_and_unknown_names():
    tiles = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    for name in ("stats", "random_cnn"):
        enc = get_encoder(name)
        out = enc.encode(tiles, 1.14)
        assert out.shape == (3, enc.dim) and out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(ValueError, match="not one of"):
        get_encoder("resnet")
    with pytest.raises(ValueError, match="weights file"):
        get_encoder("timm:resnet18")


def test_cli_bags_rejects_an_unknown_encoder(tmp_path, capsys):
    assert main(["bags", "--out", str(tmp_path / "b"), "--quick", "--encoder", "nope"]) == 2
    assert "encoder 'nope'" in capsys.readouterr().err


def test_cohort_json_records_settings(cohort):
    info = json.loads((cohort[0] / "cohort.json").read_text())
    assert info["key"] == TINY.key() and info["encoder"] == "stats" and info["n_external"] == 4


def test_a_timm_model_with_local_weights_plugs_in(tmp_path):
    timm = pytest.importorskip("timm")
    import torch

    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), weights)
    enc = get_encoder("timm:resnet18", str(weights))
    out = enc.encode(np.zeros((2, 64, 64, 3), np.uint8), 1.14)
    assert out.shape == (2, enc.dim) == (2, 512) and enc.name == "timm:resnet18" and "-" in enc.code_hash
