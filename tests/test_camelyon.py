"""Camelyon16/17 adapter: manifests from the challenges' layouts, labels, centers, splits, errors, tiling."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlutils import data
from mtlutils.core import io as mio
from mtlutils.data import annotations, camelyon, pyramid
from mtlutils.data.manifest import REQUIRED_COLUMNS, ManifestError

MPP = 0.5
TILE = 64  # tile_px at tile_mpp = MPP: level-0 tiles of 64 px
TISSUE_W, WIDTH, HEIGHT = 512, 640, 384  # tissue in x < 512 (8 tile columns), 6 tile rows
TUMOUR_X = 256  # Camelyon16 "_0" tumour polygon: x < 256 (columns 0-3), all rows
EXCLUDED = 128  # "_2" exclusion polygon: x < 128 and y < 128 (columns 0-1, rows 0-1)


def _rgb(seed: int = 0) -> np.ndarray:
    """Grey background with a noisy pink 'tissue' block on the left."""
    rng = np.random.default_rng(seed)
    rgb = (np.full((HEIGHT, WIDTH, 3), 242) + rng.integers(-3, 4, (HEIGHT, WIDTH, 3))).astype(np.uint8)
    block = np.array([215, 125, 180]) + rng.integers(-15, 16, (HEIGHT, TISSUE_W, 3))
    rgb[:, :TISSUE_W] = block.clip(0, 255).astype(np.uint8)
    return rgb


@pytest.fixture(scope="module")
def tiny_tiff(tmp_path_factory) -> Path:
    """One small pyramidal TIFF, copied under every challenge file name."""
    path = tmp_path_factory.mktemp("tiff") / "tiny.tif"
    pyramid.write_pyramidal_tiff(path, _rgb(), mpp=MPP)
    return path


def _place(tiny: Path, root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny, root / name)


def _square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def _camelyon16_xml(path: Path) -> Path:
    """Camelyon16 conventions: 'Annotation i' names, tumour in group _0, an exclusion island in _2."""
    path.parent.mkdir(parents=True, exist_ok=True)
    polys = [_square(0, 0, TUMOUR_X, HEIGHT), _square(0, 0, EXCLUDED, EXCLUDED)]
    return annotations.write_asap_xml(path, polys, group=["_0", "_2"])


def _camelyon16(tiny: Path, root: Path) -> Path:
    _place(
        tiny,
        root,
        "training/normal/normal_001.tif",
        "training/normal/normal_002.tif",
        "training/tumor/tumor_001.tif",
        "training/tumor/tumor_002.tif",
        "testing/images/test_001.tif",
        "testing/images/test_002.tif",
        "testing/images/test_003.tif",
    )
    _camelyon16_xml(root / "lesion_annotations" / "tumor_001.xml")  # flat layout
    _camelyon16_xml(root / "training" / "lesion_annotations" / "tumor_002.xml")  # per-set layout
    _camelyon16_xml(root / "testing" / "lesion_annotations" / "test_001.xml")
    (root / "testing" / "reference.csv").write_text("Test_001,Tumor,Macro,Primary\ntest_002,Normal\n")
    return root


def _stage_csv(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("patient,stage\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    return path


def _camelyon17(tiny: Path, root: Path, patients=(0, 1, 20, 45, 61, 99), nodes=(0, 1)) -> Path:
    for p in patients:
        folder = f"center_{p // 20}/" if p < 100 else ""
        _place(tiny, root, *(f"{folder}patient_{p:03d}_node_{n}.tif" for n in nodes))
    stages = {
        "patient_000.zip": "pN1",
        "patient_000_node_0.tif": "macro",
        "patient_000_node_1.tif": "negative",
    }
    stages.update({"patient_001_node_0.tif": "itc", "patient_020_node_1.tif": "micro"})
    stages["patient_099_node_0.tif"] = "negative"
    _stage_csv(root / "stage_labels.csv", stages)
    root.joinpath("lesion_annotations").mkdir()
    xml = root / "lesion_annotations" / "patient_000_node_0.xml"
    annotations.write_asap_xml(xml, [_square(0, 0, 100, 100)], group="metastases")
    return root


# --------------------------------------------------------------------------------------------------
# Camelyon16
# --------------------------------------------------------------------------------------------------


def test_annotations_read_camelyon16_groups(tmp_path):
    xml = _camelyon16_xml(tmp_path / "tumor_001.xml")
    text = xml.read_text()
    assert 'Name="Annotation 0"' in text and 'PartOfGroup="_0"' in text and 'PartOfGroup="_2"' in text
    assert text.count("<Group ") == 2
    tumour, excluded = annotations.read_asap_xml(xml), annotations.read_asap_xml(xml, exclusions=True)
    assert len(tumour) == 1 and len(excluded) == 1
    np.testing.assert_allclose(excluded[0], _square(0, 0, EXCLUDED, EXCLUDED))
    both = annotations.write_asap_xml(tmp_path / "b.xml", [_square(0, 0, 9, 9)] * 2, ["Tumor", "Exclusion"])
    assert len(annotations.read_asap_xml(both)) == 1 and len(annotations.read_asap_xml(both, True)) == 1
    with pytest.raises(annotations.AnnotationError, match="one per polygon"):
        annotations.write_asap_xml(tmp_path / "c.xml", [_square(0, 0, 9, 9)] * 2, ["_0"])


def test_camelyon16_manifest(tiny_tiff, tmp_path):
    root = _camelyon16(tiny_tiff, tmp_path / "CAMELYON16")
    df = camelyon.camelyon_manifest(root)
    assert set(REQUIRED_COLUMNS) <= set(df.columns) and {"annotation", "has_tumour", "mpp"} <= set(df.columns)
    assert df.attrs["camelyon"]["challenge"] == "camelyon16"
    by_id = df.set_index("slide_id")
    assert list(by_id.index) == [
        "normal_001",
        "normal_002",
        "test_001",
        "test_002",
        "test_003",
        "tumor_001",
        "tumor_002",
    ]
    assert set(df["center"]) == {"camelyon16"} and (df["patient_id"] == df["slide_id"]).all()
    tumour = by_id["has_tumour"]
    assert tumour[["normal_001", "normal_002", "test_002"]].eq(0).all()
    assert tumour[["tumor_001", "tumor_002", "test_001"]].eq(1).all()
    assert np.isnan(tumour["test_003"])  # not in reference.csv: unknown
    assert by_id.loc["test_001", "stage"] == "macro"
    ann = by_id["annotation"]
    assert Path(ann["tumor_001"]) == (root / "lesion_annotations" / "tumor_001.xml").absolute()
    assert Path(ann["tumor_002"]).parent.parent.name == "training"
    assert Path(ann["test_001"]).parent.parent.name == "testing"
    assert ann[["normal_001", "test_002", "test_003"]].isna().all()
    assert (by_id.loc[by_id.index.str.startswith("test_"), "split"] == "test").all()
    assert set(by_id.loc[~by_id.index.str.startswith("test_"), "split"]) <= {"train", "val"}
    assert Path(by_id.loc["tumor_001", "path"]).is_file()
    assert df.equals(camelyon.camelyon_manifest(root, challenge="camelyon16"))
    assert (camelyon.camelyon_manifest(root, mpp=0.25)["mpp"] == 0.25).all()


def test_write_camelyon_manifest_round_trips(tiny_tiff, tmp_path):
    root = _camelyon16(tiny_tiff, tmp_path / "CAMELYON16")
    out = camelyon.write_camelyon_manifest(root, root / "manifest.csv", seed=3)
    text = pd.read_csv(out)
    assert text.loc[0, "path"] == "training/normal/normal_001.tif"  # relative to the CSV's folder
    back = data.read_manifest(out)
    direct = camelyon.camelyon_manifest(root, seed=3)
    assert back["path"].tolist() == direct["path"].tolist()
    assert back["split"].tolist() == direct["split"].tolist()
    assert not [p for p in root.iterdir() if mio.is_temp_file(p)]


def test_cli_writes_the_manifest_and_fails_in_one_line(tiny_tiff, tmp_path, capsys):
    """`mtlutils camelyon ROOT --out CSV`: the same manifest as the API; a folder without slides exits 2."""
    from mtlutils.core import cli

    root = _camelyon16(tiny_tiff, tmp_path / "CAMELYON16")
    assert cli.main(["camelyon", str(root), "--out", str(tmp_path / "m.csv"), "--seed", "3"]) == 0
    assert (
        data.read_manifest(tmp_path / "m.csv")["split"].tolist()
        == camelyon.camelyon_manifest(root, seed=3)["split"].tolist()
    )
    (tmp_path / "empty").mkdir()
    assert cli.main(["camelyon", str(tmp_path / "empty"), "--out", str(tmp_path / "e.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty" in err and "\n" not in err and not (tmp_path / "e.csv").exists()


def test_tile_cohort_labels_tiles_from_camelyon16_xml(tmp_path):
    root = tmp_path / "CAMELYON16"
    for name, seed in (("training/tumor/tumor_001.tif", 1), ("training/normal/normal_001.tif", 2)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pyramid.write_pyramidal_tiff(root / name, _rgb(seed), mpp=MPP)
    _camelyon16_xml(root / "training" / "lesion_annotations" / "tumor_001.xml")
    manifest = camelyon.camelyon_manifest(root)
    index = data.tile_cohort(
        manifest, tmp_path / "patches", tile_mpp=MPP, tile_px=TILE, mask_mpp=2.0, show_progress=False
    )
    n_tissue_tiles = (TISSUE_W // TILE) * (HEIGHT // TILE)
    assert index.groupby("slide_id").size().to_dict() == {
        "normal_001": n_tissue_tiles,
        "tumor_001": n_tissue_tiles,
    }
    assert index.loc[index.slide_id == "normal_001", "label"].eq(0).all()  # negative slide: all normal
    tumour = index[index.slide_id == "tumor_001"]
    inside = (tumour.x_px < TUMOUR_X) & ~((tumour.x_px < EXCLUDED) & (tumour.y_px < EXCLUDED))
    assert tumour.loc[inside, "label"].eq(1).all() and inside.sum() == 4 * 6 - 4
    assert tumour.loc[~inside, "label"].eq(0).all()  # outside the polygon or in the _2 exclusion
    assert tumour.loc[(tumour.x_px < EXCLUDED) & (tumour.y_px < EXCLUDED), "label"].eq(0).sum() == 4


# --------------------------------------------------------------------------------------------------
# Camelyon17
# --------------------------------------------------------------------------------------------------


def test_camelyon17_manifest(tiny_tiff, tmp_path):
    root = _camelyon17(tiny_tiff, tmp_path / "CAMELYON17")
    df = camelyon.camelyon_manifest(root, external_centers=["center_4"])
    assert df.attrs["camelyon"]["challenge"] == "camelyon17"
    by_id = df.set_index("slide_id")
    assert len(df) == 12 and df["patient_id"].nunique() == 6
    assert by_id.loc["patient_045_node_1", "patient_id"] == "patient_045"
    centers = df.groupby("patient_id")["center"].unique().map(list).to_dict()
    assert centers == {
        "patient_000": ["center_0"],
        "patient_001": ["center_0"],
        "patient_020": ["center_1"],
        "patient_045": ["center_2"],
        "patient_061": ["center_3"],
        "patient_099": ["center_4"],
    }
    tumour = by_id["has_tumour"]
    assert tumour[["patient_000_node_0", "patient_001_node_0", "patient_020_node_1"]].eq(1).all()
    assert tumour[["patient_000_node_1", "patient_099_node_0"]].eq(0).all()
    assert tumour[["patient_045_node_0", "patient_061_node_1"]].isna().all()  # not in the stage CSV
    assert by_id.loc["patient_001_node_0", "stage"] == "itc"
    assert by_id.loc["patient_000_node_1", "pn_stage"] == "pN1"
    assert by_id["annotation"].notna().sum() == 1 and by_id.loc["patient_000_node_0", "annotation"]
    assert (df.loc[df.center == "center_4", "split"] == "external").all()
    assert set(df.loc[df.center != "center_4", "split"]) <= {"train", "val", "test"}
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()  # nodes of a patient stay together
    assert (
        df["split"].tolist()
        == camelyon.camelyon_manifest(root, external_centers="center_4")["split"].tolist()
    )


def test_camelyon17_center_from_patient_number_without_folders(tiny_tiff, tmp_path):
    root = tmp_path / "flat"
    _place(tiny_tiff, root, "patient_019_node_0.tif", "patient_020_node_3.tif", "patient_080_node_2.tif")
    _place(tiny_tiff, root, "testing/patient_150_node_0.tif")
    (root / "center_3").mkdir()
    (root / "center_3" / "patient_070_node_1.tif").symlink_to(tiny_tiff)  # data linked in from elsewhere
    df = camelyon.camelyon_manifest(root).set_index("slide_id")
    assert df["center"].to_dict() == {
        "patient_019_node_0": "center_0",
        "patient_020_node_3": "center_1",
        "patient_070_node_1": "center_3",
        "patient_080_node_2": "center_4",
        "patient_150_node_0": camelyon.UNKNOWN_CENTER,
    }
    assert df.loc["patient_150_node_0", "split"] == "test"  # challenge test patient (>= 100)


def test_camelyon17_folder_disagreeing_with_patient_number(tiny_tiff, tmp_path):
    _place(tiny_tiff, tmp_path, "center_1/patient_045_node_0.tif")
    with pytest.raises(ManifestError, match=r"center_1 but patient 045 belongs to center_2") as info:
        camelyon.camelyon_manifest(tmp_path)
    assert "\n" not in str(info.value)


def test_splits_are_seeded_stratified_and_patient_grouped(tiny_tiff, tmp_path):
    root = tmp_path / "c17"
    patients = range(0, 100, 2)  # 50 patients, 10 per center
    for p in patients:
        _place(tiny_tiff, root, *(f"center_{p // 20}/patient_{p:03d}_node_{n}.tif" for n in range(2)))
    kw = dict(external_centers=("center_0",), val_fraction=0.25, test_fraction=0.25)
    a = camelyon.camelyon_manifest(root, seed=0, **kw)
    assert a["split"].tolist() == camelyon.camelyon_manifest(root, seed=0, **kw)["split"].tolist()
    assert a["split"].tolist() != camelyon.camelyon_manifest(root, seed=1, **kw)["split"].tolist()
    per_patient = a.groupby("patient_id")["split"].agg(["nunique", "first"])
    assert (per_patient["nunique"] == 1).all()
    assert per_patient["first"].value_counts().to_dict() == {
        "train": 20,
        "val": 10,
        "test": 10,
        "external": 10,
    }
    internal = a[a.split != "external"].drop_duplicates("patient_id")
    assert (internal.groupby("center")["split"].apply(lambda s: (s == "val").sum()) >= 2).all()  # stratified
    assert camelyon.camelyon_manifest(root, test_fraction=0.0, val_fraction=0.0)["split"].eq("train").all()


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def _error(root, **kw) -> str:
    with pytest.raises((ManifestError, ValueError)) as info:
        camelyon.camelyon_manifest(root, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_layouts(tiny_tiff, tmp_path):
    assert "does not exist" in _error(tmp_path / "nothere")
    (tmp_path / "empty").mkdir()
    assert "no Camelyon slides found under" in _error(tmp_path / "empty")
    _place(tiny_tiff, tmp_path / "zips", "center_0/patient_000.zip")
    assert "unzip them first" in _error(tmp_path / "zips")
    _place(tiny_tiff, tmp_path / "both", "normal_001.tif", "patient_000_node_0.tif")
    assert "both Camelyon16" in _error(tmp_path / "both")
    assert "camelyon18" in _error(tmp_path / "both", challenge="camelyon18")
    _place(tiny_tiff, tmp_path / "c16", "training/tumor/tumor_001.tif", "elsewhere/tumor_001.tif")
    assert "appears twice" in _error(tmp_path / "c16")
    assert "no Camelyon17 slides" in _error(tmp_path / "c16", challenge="camelyon17")


def test_bad_labels_and_annotations(tiny_tiff, tmp_path):
    root = _camelyon17(tiny_tiff, tmp_path / "c17")
    _stage_csv(root / "stage_labels.csv", {"patient_000_node_0.tif": "huge"})
    assert "stage 'huge'" in _error(root) and "line 2" in _error(root)
    _stage_csv(root / "stage_labels.csv", {"slide_7.tif": "negative"})
    assert "neither patient_PPP.zip nor patient_PPP_node_N.tif" in _error(root)
    (root / "stage_labels.csv").write_text("name,label\npatient_000_node_0.tif,negative\n")
    assert "needs columns 'patient, stage'" in _error(root)
    (root / "stage_labels.csv").unlink()
    assert "labels CSV" in _error(root, labels_csv=root / "missing.csv")
    assert "external_centers ['center_9']" in _error(root, external_centers=["center_9"])
    assert "val_fraction" in _error(root, val_fraction=0.6, test_fraction=0.5)
    orphan = root / "lesion_annotations" / "patient_077_node_3.xml"
    annotations.write_asap_xml(orphan, [_square(0, 0, 50, 50)])
    assert "has no slide patient_077_node_3.tif" in _error(root)
    assert len(camelyon.camelyon_manifest(root, allow_missing_slides=True)) == 12
    orphan.unlink()
    _stage_csv(root / "stage_labels.csv", {"patient_000_node_0.tif": "negative"})
    assert "labelled negative" in _error(root)

    c16 = tmp_path / "c16"
    _place(tiny_tiff, c16, "training/tumor/tumor_001.tif", "testing/images/test_001.tif")
    (c16 / "testing" / "reference.csv").write_text("image,class\ntest_001,Benign\n")
    assert "Normal|Tumor" in _error(c16)
    (c16 / "testing" / "reference.csv").write_text("image,class\ntest_001,Normal\n")
    (c16 / "training" / "lesion_annotations.zip").write_bytes(b"PK")
    assert "annotations are still zipped" in _error(c16)
    assert camelyon.camelyon_manifest(c16, annotations=False)["annotation"].isna().all()
