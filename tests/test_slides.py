"""Slides → patches: annotations, opening slides, tissue detection, tiling, manifests, the patch cache."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest

from mtlutils import data
from mtlutils.core import hdf5
from mtlutils.core import io as mio
from mtlutils.data import annotations, pyramid, tiling

MPP = 0.5
WIDTH, HEIGHT = 1792, 1344  # 8 x 6 tiles of 224 px at level 0
TISSUE_RIGHT = 1120  # tissue occupies x < 1120 (5 tile columns at 0.5 µm/px), all rows
TUMOUR_RIGHT = 504  # tumour polygon: x < 504 -> columns 0-1 tumour, column 2 has 25 % tumour (ambiguous)


def _pink_slide(seed: int = 0, tissue: bool = True) -> np.ndarray:
    """Light-grey background, a pink 'tissue' block on the left with pixel noise."""
    rng = np.random.default_rng(seed)
    rgb = (np.full((HEIGHT, WIDTH, 3), 242) + rng.integers(-3, 4, (HEIGHT, WIDTH, 3))).astype(np.uint8)
    if tissue:
        block = np.array([215, 125, 180]) + rng.integers(-15, 16, (HEIGHT, TISSUE_RIGHT, 3))
        rgb[:, :TISSUE_RIGHT] = block.clip(0, 255).astype(np.uint8)
    return rgb


def _tumour_polygon() -> np.ndarray:
    return np.array([[0, 0], [TUMOUR_RIGHT, 0], [TUMOUR_RIGHT, HEIGHT], [0, HEIGHT]], dtype=float)


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory):
    """Synthetic pyramidal TIFFs: with MPP, without MPP, without tissue, plus an annotation."""
    folder = tmp_path_factory.mktemp("slides")
    rgb = _pink_slide()
    pyramid.write_pyramidal_tiff(folder / "tissue.tiff", rgb, mpp=MPP)
    pyramid.write_pyramidal_tiff(folder / "nompp.tiff", rgb, mpp=None)
    pyramid.write_pyramidal_tiff(folder / "blank.tiff", _pink_slide(tissue=False), mpp=MPP)
    annotations.write_asap_xml(folder / "tissue.xml", [_tumour_polygon()])
    return {"folder": folder, "rgb": rgb}


# --------------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------------


def test_asap_xml_round_trip_and_exclusions(tmp_path):
    square = np.array([[10.5, 20.25], [110.5, 20.25], [110.5, 120.25], [10.5, 120.25]])
    triangle = np.array([[0, 0], [50, 0], [25, 40]], dtype=float)
    path = annotations.write_asap_xml(tmp_path / "a.xml", [square, triangle])
    back = annotations.read_asap_xml(path)
    assert len(back) == 2
    np.testing.assert_allclose(back[0], square)
    np.testing.assert_allclose(back[1], triangle)
    text = path.read_text()
    assert "<ASAP_Annotations>" in text and 'PartOfGroup="Tumor"' in text and 'Type="Polygon"' in text
    # Camelyon16: _0/_1 tumour, _2 exclusion
    annotations.write_asap_xml(tmp_path / "ex.xml", [square], group="_2")
    assert annotations.read_asap_xml(tmp_path / "ex.xml") == []
    assert len(annotations.read_asap_xml(tmp_path / "ex.xml", exclusions=True)) == 1


def test_asap_xml_coordinates_follow_order_attribute(tmp_path):
    xml = (
        '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="_0"><Coordinates>'
        '<Coordinate Order="2" X="10" Y="10"/><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="10" Y="0"/>'
        "</Coordinates></Annotation></Annotations></ASAP_Annotations>"
    )
    (tmp_path / "o.xml").write_text(xml)
    np.testing.assert_allclose(annotations.read_asap_xml(tmp_path / "o.xml")[0], [[0, 0], [10, 0], [10, 10]])


def test_asap_xml_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.xml"):
        annotations.read_asap_xml(tmp_path / "nothere.xml")
    (tmp_path / "bad.xml").write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(annotations.AnnotationError, match="bad.xml") as info:
        annotations.read_asap_xml(tmp_path / "bad.xml")
    assert "\n" not in str(info.value)
    (tmp_path / "other.xml").write_text("<root/>")
    with pytest.raises(annotations.AnnotationError, match="ASAP_Annotations"):
        annotations.read_asap_xml(tmp_path / "other.xml")
    with pytest.raises(annotations.AnnotationError, match="polygon 0"):
        annotations.write_asap_xml(tmp_path / "w.xml", [np.zeros((2, 2))])
    assert not (tmp_path / "w.xml").exists()


def test_rasterize_square_area_and_exclusion():
    square = np.array([[100, 100], [500, 100], [500, 500], [100, 500]], dtype=float)  # 400 x 400 px
    mask = annotations.rasterize_polygons([square], (200, 200), downsample=4.0)
    assert mask.sum() == pytest.approx(100 * 100, rel=0.03)
    assert mask[50, 50] and not mask[10, 10]
    hole = np.array([[200, 200], [400, 200], [400, 400], [200, 400]], dtype=float)
    with_hole = annotations.rasterize_polygons([square], (200, 200), downsample=4.0, exclusions=[hole])
    assert with_hole.sum() == pytest.approx(100 * 100 - 50 * 50, rel=0.03)
    assert annotations.polygon_area(square) == pytest.approx(160000)


def test_rasterize_agrees_with_skimage_on_random_polygons():
    from skimage.draw import polygon as sk_polygon

    rng = np.random.default_rng(0)
    differ = total = 0
    for trial in range(100):
        n = int(rng.integers(3, 30))
        if trial % 3 == 0:  # self-intersecting
            poly = rng.uniform(-10, 150, (n, 2))
        else:
            angles, radii = np.sort(rng.uniform(0, 2 * np.pi, n)), rng.uniform(5, 60, n)
            poly = rng.uniform(-20, 120, 2) + np.c_[radii * np.cos(angles), radii * np.sin(angles)]
        downsample = float(rng.choice([1.0, 2.5, 7.0]))
        shape = (int(rng.integers(5, 80)), int(rng.integers(5, 80)))
        ours = annotations.rasterize_polygons([poly], shape, downsample)
        pts = poly / downsample - 0.5
        ref = np.zeros(shape, dtype=bool)
        rr, cc = sk_polygon(pts[:, 1], pts[:, 0], shape=shape)
        ref[rr, cc] = True
        differ += int((ours != ref).sum())
        total += int(ref.sum())
    assert total > 10_000 and differ <= 1e-3 * total  # only pixel centres exactly on an edge may differ


def test_tumour_fraction_raster_and_per_tile_paths_agree():
    rng = np.random.default_rng(1)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 60))
    star = np.c_[
        900 + rng.uniform(300, 600, 60) * np.cos(angles), 700 + rng.uniform(300, 600, 60) * np.sin(angles)
    ]
    hole = np.array([[800, 600], [1000, 600], [1000, 800], [800, 800]], dtype=float)
    grid_r, grid_c = np.divmod(np.arange(8 * 8), 8)
    x, y = grid_c * 224, grid_r * 224
    fast = tiling._tumour_fractions(x, y, 224.0, [star], [hole])
    slow = tiling._tumour_fractions(x, y, 224.0, [star], [hole], max_raster_px=0)
    np.testing.assert_allclose(fast, slow)
    assert fast.min() == 0 and fast.max() == 1 and 0 < fast.mean() < 1


# --------------------------------------------------------------------------------------------------
# opening slides and their errors
# --------------------------------------------------------------------------------------------------


def test_open_slide_reads_mpp_and_pixels(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        assert slide.mpp == pytest.approx(MPP)
        assert slide.mpp_source == "openslide.mpp-x"
        assert slide.dimensions == (WIDTH, HEIGHT)
        assert slide.level_count >= 2
        region = slide.read_region((100, 50), 0, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8
        np.testing.assert_array_equal(region, slide_files["rgb"][50:82, 100:164])
        # outside the image: transparent pixels become white
        outside = slide.read_region((WIDTH - 8, 0), 0, (16, 4))
        assert (outside[:, 8:] == 255).all()


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_missing_slide_path(tmp_path):
    with pytest.raises(data.SlideNotFoundError) as info:
        data.open_slide(tmp_path / "nope.svs")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert "nope.svs" in _one_line(info) and "does not exist" in str(info.value)


def test_file_that_is_not_a_slide(tmp_path):
    (tmp_path / "notes.svs").write_text("this is not a slide\n" * 50)
    with pytest.raises(data.SlideError) as info:
        data.open_slide(tmp_path / "notes.svs")
    assert "notes.svs" in _one_line(info) and "not a whole-slide image" in str(info.value)
    (tmp_path / "empty.svs").write_bytes(b"")
    with pytest.raises(data.SlideError, match="empty"):
        data.open_slide(tmp_path / "empty.svs")
    with pytest.raises(data.SlideError, match="folder"):
        data.open_slide(tmp_path)


def test_truncated_tiff(slide_files, tmp_path):
    raw = (slide_files["folder"] / "tissue.tiff").read_bytes()
    for fraction in (0.5, 0.99):
        path = tmp_path / f"cut{fraction}.tiff"
        path.write_bytes(raw[: int(len(raw) * fraction)])
        with pytest.raises(data.SlideError) as info:
            data.open_slide(path)
        assert path.name in _one_line(info) and ("truncated" in str(info.value))


def test_missing_mpp_needs_an_override(slide_files):
    path = slide_files["folder"] / "nompp.tiff"
    with pytest.raises(data.MissingMPPError) as info:
        data.open_slide(path)
    message = _one_line(info)
    assert "nompp.tiff" in message and "mpp_override=" in message and "--mpp-override" in message
    with data.open_slide(path, mpp_override=0.25) as slide:
        assert slide.mpp == 0.25 and slide.mpp_source == "override"
    with data.open_slide(path, default_mpp=0.5) as slide:
        assert slide.mpp == 0.5 and slide.mpp_source == "default_mpp"
    with data.open_slide(slide_files["folder"] / "tissue.tiff", default_mpp=0.25) as slide:
        assert slide.mpp == pytest.approx(MPP)  # default only fills missing metadata
    with pytest.warns(UserWarning, match="differs from its metadata"):
        data.open_slide(slide_files["folder"] / "tissue.tiff", mpp_override=1.0).close()
    with pytest.raises(data.SlideError, match="plausible"):
        data.open_slide(path, mpp_override=-3)


def test_mpp_from_tiff_resolution_fallbacks():
    assert data.mpp_from_properties({"aperio.MPP": "0.2527"}) == (0.2527, "aperio.MPP")
    mpp, source = data.mpp_from_properties({"tiff.XResolution": "40000", "tiff.ResolutionUnit": "centimeter"})
    assert mpp == pytest.approx(0.25) and source == "tiff.XResolution"
    mpp, _ = data.mpp_from_properties({"tiff.XResolution": "50800", "tiff.ResolutionUnit": "inch"})
    assert mpp == pytest.approx(0.5)
    # a 72-dpi default or a missing unit is not a microscope resolution
    assert data.mpp_from_properties({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"}) == (None, "")
    assert data.mpp_from_properties({"tiff.XResolution": "1", "tiff.ResolutionUnit": "none"}) == (None, "")


# --------------------------------------------------------------------------------------------------
# tissue and tiling
# --------------------------------------------------------------------------------------------------


def test_detect_tissue_area(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        tissue = data.detect_tissue(slide)
    expected_mm2 = TISSUE_RIGHT * HEIGHT * MPP**2 / 1e6
    assert tissue.mpp == pytest.approx(8.0, rel=0.01)
    assert tissue.mask.shape == (HEIGHT // 16, WIDTH // 16)
    assert tissue.tissue_area_mm2 == pytest.approx(expected_mm2, rel=0.03)
    # the QC picture outlines the tissue instead of tinting it: the stain inside stays untouched
    picture = tissue.overlay()
    assert picture.shape == tissue.thumbnail.shape
    changed = (picture != tissue.thumbnail).any(axis=-1)
    assert changed.any() and not (changed & ~tissue.mask).any()  # only mask pixels are drawn on
    interior = tissue.mask.copy()
    interior[1:-1, 1:-1] &= (
        tissue.mask[:-2, 1:-1] & tissue.mask[2:, 1:-1] & tissue.mask[1:-1, :-2] & tissue.mask[1:-1, 2:]
    )
    assert not changed[1:-1, 1:-1][interior[1:-1, 1:-1]].any()


def test_tile_at_native_resolution(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        images, coords = data.tile_slide(slide, tile_mpp=0.5, tile_px=224)
    assert images.shape == (30, 224, 224, 3) and images.dtype == np.uint8  # 5 columns x 6 rows of tissue
    assert coords.attrs["level"] == 0 and coords.attrs["tile_size_px"] == 224
    assert (coords["x_px"] % 224 == 0).all() and (coords["y_px"] % 224 == 0).all()
    assert coords["x_px"].max() == 4 * 224
    np.testing.assert_allclose(coords["x_um"], coords["x_px"] * MPP)
    assert (coords["tissue_fraction"] > 0.99).all()
    assert coords["label"].isna().all()  # no annotation given: labels unknown
    rgb = slide_files["rgb"]
    for i in (0, 17, 29):
        x, y = int(coords["x_px"].iloc[i]), int(coords["y_px"].iloc[i])
        np.testing.assert_array_equal(images[i], rgb[y : y + 224, x : x + 224])


def test_tile_at_half_resolution_uses_level_1(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        images, coords = data.tile_slide(slide, tile_mpp=1.0, tile_px=224)
    # a tile covers 448 level-0 px = 224 µm; read from level 1 (downsample 2)
    assert coords.attrs["level"] == 1 and coords.attrs["tile_size_px"] == 448
    assert coords.attrs["actual_tile_mpp"] == pytest.approx(1.0)
    assert (coords["x_px"] % 448 == 0).all() and (coords["y_px"] % 448 == 0).all()
    # columns 0-1 are full tissue; column 2 (896-1344) is half tissue -> kept at threshold 0.5
    by_col = coords.groupby("x_px")["tissue_fraction"].mean()
    assert by_col.loc[0] > 0.99 and by_col.loc[896] == pytest.approx(0.5, abs=0.05)
    assert len(coords) == 3 * 3
    x, y = int(coords["x_px"].iloc[0]), int(coords["y_px"].iloc[0])
    block = (
        slide_files["rgb"][y : y + 448, x : x + 448]
        .astype(float)
        .reshape(224, 2, 224, 2, 3)
        .mean(axis=(1, 3))
    )
    assert np.abs(images[0].astype(float) - block).max() <= 1.0


def test_tumour_labels_from_polygon_and_ambiguous_dropped(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        _, coords = data.tile_slide(slide, tumour_polygons=[_tumour_polygon()])
    assert coords.attrs["n_ambiguous_dropped"] == 6  # column 2: 25 % tumour
    assert set(coords["x_px"].unique()) == {0, 224, 672, 896}
    tumour = coords[coords["x_px"] < 448]
    normal = coords[coords["x_px"] >= 672]
    assert (tumour["label"] == 1).all() and (tumour["tumour_fraction"] == 1).all() and len(tumour) == 12
    assert (normal["label"] == 0).all() and (normal["tumour_fraction"] == 0).all() and len(normal) == 12
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        _, loose = data.tile_slide(slide, tumour_polygons=[_tumour_polygon()], tumour_min=0.2)
    assert loose.attrs["n_ambiguous_dropped"] == 0 and (loose["label"] == 1).sum() == 18
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        _, normal_only = data.tile_slide(slide, tumour_polygons=[])
    assert (normal_only["label"] == 0).all() and len(normal_only) == 30


def test_slide_without_tissue_is_a_clear_error(slide_files):
    with data.open_slide(slide_files["folder"] / "blank.tiff") as slide:
        with pytest.raises(data.NoTissueError) as info:
            data.tile_slide(slide)
    message = _one_line(info)
    assert "blank.tiff" in message and "tissue_threshold" in message


def test_threshold_that_no_tile_reaches(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        tissue = data.detect_tissue(slide)
        tissue.mask[:] = False
        tissue.mask[:10, :10] = True  # a speck of tissue, smaller than any tile
        tissue._integral = None
        with pytest.raises(data.NoTissueError, match="lower tissue_threshold"):
            data.tile_slide(slide, tissue=tissue, tissue_threshold=0.9)


def test_balanced_sampling_is_seeded_and_recorded():
    labels = np.r_[np.zeros(95), np.ones(5)]
    idx, record = tiling._sample_balanced(labels, 20, seed=3)
    assert len(idx) == 20 and labels[idx].sum() == 5  # the rare class survives whole
    assert record["before"] == {"normal": 95, "tumour": 5} and record["after"] == {"normal": 15, "tumour": 5}
    again, _ = tiling._sample_balanced(labels, 20, seed=3)
    other, _ = tiling._sample_balanced(labels, 20, seed=4)
    np.testing.assert_array_equal(idx, again)
    assert not np.array_equal(idx, other)


def test_max_tiles_keeps_classes_and_weights(slide_files):
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        images, coords = data.tile_slide(slide, tumour_polygons=[_tumour_polygon()], max_tiles=8, seed=1)
    assert len(images) == len(coords) == 8
    assert coords.attrs["sampling"]["after"] == {"normal": 4, "tumour": 4}
    np.testing.assert_allclose(coords["sampling_weight"], 12 / 4)


# --------------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------------


def _write_manifest(folder, rows, name="manifest.csv"):
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def cohort(slide_files, tmp_path):
    """Three slides: annotated tumour slide, known-normal slide, tumour slide without annotation."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    for name in ("tissue.tiff", "tissue.xml", "nompp.tiff"):
        os.symlink(slide_files["folder"] / name, folder / name)
    rows = [
        {
            "slide_id": "s1",
            "patient_id": "p1",
            "center": "A",
            "split": "train",
            "path": "tissue.tiff",
            "annotation": "tissue.xml",
            "has_tumour": 1,
            "tme_score": 0.3,
        },
        {
            "slide_id": "s2",
            "patient_id": "p2",
            "center": "B",
            "split": "test",
            "path": "tissue.tiff",
            "annotation": "",
            "has_tumour": 0,
            "tme_score": 0.7,
        },
        {
            "slide_id": "s3",
            "patient_id": "p2",
            "center": "B",
            "split": "train",
            "path": "nompp.tiff",
            "annotation": "",
            "has_tumour": 1,
            "mpp": 0.5,
        },
    ]
    return _write_manifest(folder, rows)


def test_read_manifest_resolves_paths(cohort):
    df = data.read_manifest(cohort)
    assert list(df["slide_id"]) == ["s1", "s2", "s3"]
    assert all(os.path.isabs(p) and os.path.exists(p) for p in df["path"])
    assert df.loc[0, "annotation"].endswith("tissue.xml") and df.loc[1, "annotation"] is None
    assert df["has_tumour"].tolist() == [1.0, 0.0, 1.0]
    assert "biomarker" in df.columns  # optional columns always present


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda rows: [{k: v for k, v in r.items() if k != "center"} for r in rows], "lacks required column"),
        (lambda rows: [rows[0], {**rows[1], "slide_id": "s1"}], "duplicate slide_id"),
        (lambda rows: [{**rows[0], "path": "missing.tiff"}], "not found"),
        (lambda rows: [{**rows[0], "annotation": "missing.xml"}], "annotation file"),
        (lambda rows: [{**rows[0], "has_tumour": "yes"}], "non-numeric"),
        (lambda rows: [{**rows[0], "slide_id": "a/b"}], "file names"),
        (lambda rows: [{**rows[0], "split": ""}], "empty"),
    ],
)
def test_manifest_errors(cohort, change, pattern):
    rows = pd.read_csv(cohort, dtype=str, keep_default_na=False).to_dict(orient="records")
    bad = _write_manifest(cohort.parent, change(rows), name="bad.csv")
    with pytest.raises(data.ManifestError, match=pattern) as info:
        data.read_manifest(bad)
    assert "bad.csv" in _one_line(info)


def test_missing_manifest(tmp_path):
    with pytest.raises(data.ManifestError, match="does not exist"):
        data.read_manifest(tmp_path / "none.csv")


# --------------------------------------------------------------------------------------------------
# cohort tiling, the patch cache and load_patches
# --------------------------------------------------------------------------------------------------


def test_tile_cohort_writes_index_cache_and_loads(cohort, tmp_path):
    out = tmp_path / "patches"
    index = data.tile_cohort(cohort, out, show_progress=False)
    for col in (
        "slide_id",
        "patient_id",
        "center",
        "split",
        "has_tumour",
        "biomarker",
        "tme_score",
        "x_px",
        "y_px",
        "x_um",
        "y_um",
        "tissue_fraction",
        "tumour_fraction",
        "label",
        "row",
    ):
        assert col in index.columns
    counts = index.groupby("slide_id").size().to_dict()
    assert counts == {"s1": 24, "s2": 30, "s3": 30}
    assert index.loc[index.slide_id == "s2", "label"].eq(0).all()  # has_tumour = 0: all normal
    assert index.loc[index.slide_id == "s3", "label"].isna().all()  # tumour slide, no annotation: unknown
    assert index.loc[index.slide_id == "s1", "label"].sum() == 12
    on_disk = pd.read_csv(out / "index.csv")
    assert len(on_disk) == len(index)
    info = json.loads((out / "dataset.json").read_text())
    assert (
        info["n_patches"] == 84 and info["parameters"]["tile_px"] == 224 and info["labels"]["unknown"] == 30
    )
    assert info["slides"]["s1"]["n_ambiguous_dropped"] == 6 and info["sampled"] is False
    with h5py.File(out / "s1.h5") as h5:
        assert h5["images"].shape == (24, 224, 224, 3) and h5["images"].chunks == (1, 224, 224, 3)
        assert h5.attrs["slide_id"] == "s1" and h5.attrs["center"] == "A" and h5.attrs["split"] == "train"
        assert (
            h5.attrs["mpp"] == pytest.approx(MPP)
            and h5.attrs["tile_px"] == 224
            and h5.attrs["tile_mpp"] == 0.5
        )
        assert str(h5.attrs["source"]).endswith("tissue.tiff")
    assert hdf5.read_h5_attrs(out / "s3.h5")["mpp_source"] == "override"  # manifest mpp column
    from PIL import Image

    qc = np.asarray(Image.open(out / "qc" / "s1.png"))
    assert qc.shape == (2 * HEIGHT // 16, 2 * WIDTH // 16, 3)
    from mtlutils.data.cohort import QC_NORMAL_RGB, QC_TUMOUR_RGB

    # tumour and normal tile outlines, in the colour-blind-safe QC colours
    assert (qc == QC_TUMOUR_RGB).all(-1).any() and (qc == QC_NORMAL_RGB).all(-1).any()

    train = data.load_patches(out, split="train")
    assert len(train) == 54 and set(train.meta["slide_id"]) == {"s1", "s3"}
    assert train.images.shape == (54, 224, 224, 3)
    with data.open_slide(slide_files_path(cohort)) as slide:
        direct, coords = data.tile_slide(slide, tumour_polygons=[_tumour_polygon()])
    s1 = train.meta.index[train.meta["slide_id"] == "s1"].to_numpy()
    np.testing.assert_array_equal(train.images[s1], direct)
    np.testing.assert_array_equal(train.meta.loc[s1, "x_px"].to_numpy(), coords["x_px"].to_numpy())
    both = data.load_patches(out, center=["A", "B"], split=["train", "test"])
    assert len(both) == 84
    with pytest.raises(ValueError, match="no patch with split"):
        data.load_patches(out, split="validation")
    with pytest.raises(FileNotFoundError, match="tile_cohort"):
        data.load_patches(tmp_path / "empty")


def slide_files_path(cohort):
    return cohort.parent / "tissue.tiff"


def test_tile_cohort_is_resumable_and_atomic(cohort, tmp_path, monkeypatch):
    out = tmp_path / "patches"
    out.mkdir()
    # a leftover temporary file from a crashed run, and a corrupt final file: neither counts as done
    (out / ".s1.tmp-999-deadbeef.h5").write_bytes(b"partial")
    (out / "s2.h5").write_bytes(b"garbage, not HDF5")
    data.tile_cohort(cohort, out, show_progress=False)
    assert hdf5.h5_length(out / "s2.h5", "images") == 30
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("s*.h5")}

    index = data.tile_cohort(cohort, out, show_progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("s*.h5")} == stamps  # nothing rewritten
    assert json.loads((out / "dataset.json").read_text())["n_slides_skipped"] == 3
    assert len(index) == 84

    # other parameters: rebuilt
    data.tile_cohort(cohort, out, tile_px=112, show_progress=False)
    assert hdf5.read_h5_attrs(out / "s1.h5")["tile_px"] == 112

    # a crash in the middle of writing leaves the previous file and no temporary file
    calls = {"n": 0}
    real_blocks = data.iter_tile_blocks

    def crashing_blocks(*args, **kwargs):
        for block in real_blocks(*args, **kwargs):
            calls["n"] += 1
            yield block
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr("mtlutils.data.cohort.iter_tile_blocks", crashing_blocks)
    with pytest.raises(KeyboardInterrupt):
        data.tile_cohort(cohort, out, tile_px=224, show_progress=False)
    assert calls["n"] == 1
    assert hdf5.read_h5_attrs(out / "s1.h5")["tile_px"] == 112  # old complete file untouched
    leftovers = [p.name for p in out.iterdir() if mio.is_temp_file(p)]
    assert leftovers == [".s1.tmp-999-deadbeef.h5"]  # only the one planted above


def test_tile_cohort_mpp_override_for_slides_lacking_it(slide_files, tmp_path):
    rows = [
        {
            "slide_id": "n1",
            "patient_id": "p",
            "center": "A",
            "split": "train",
            "path": str(slide_files["folder"] / "nompp.tiff"),
        }
    ]
    manifest = _write_manifest(tmp_path, rows)
    with pytest.raises(data.MissingMPPError, match="--mpp-override"):
        data.tile_cohort(manifest, tmp_path / "out", show_progress=False)
    index = data.tile_cohort(manifest, tmp_path / "out", mpp_override=0.5, show_progress=False)
    assert len(index) == 30 and index["mpp"].eq(0.5).all()
    few = tmp_path / "few"
    sampled = data.tile_cohort(manifest, few, mpp_override=0.5, max_tiles_per_slide=7, show_progress=False)
    info = json.loads((few / "dataset.json").read_text())
    assert len(sampled) == 7 and info["sampled"] is True
    assert info["slides"]["n1"]["sampling"]["before"] == {"unknown": 30}
    np.testing.assert_allclose(sampled["sampling_weight"], 30 / 7)


def test_tile_cohort_unwritable_output(cohort, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(mio.UnwritableDirError, match="a_file"):
        data.tile_cohort(cohort, blocker / "patches", show_progress=False)


def test_tile_cohort_with_two_workers_matches_one(cohort, tmp_path):
    one = data.tile_cohort(cohort, tmp_path / "one", show_progress=False)
    two = data.tile_cohort(data.read_manifest(cohort), tmp_path / "two", workers=2, show_progress=False)
    pd.testing.assert_frame_equal(one, two)
    a = data.load_patches(tmp_path / "one")
    b = data.load_patches(tmp_path / "two")
    np.testing.assert_array_equal(a.images, b.images)


# --------------------------------------------------------------------------------------------------
# the real Aperio slide
# --------------------------------------------------------------------------------------------------


def test_real_slide(real_slide):
    with data.open_slide(real_slide) as slide:
        assert slide.mpp == pytest.approx(0.499, abs=1e-3)
        assert slide.dimensions == (2220, 2967)
        tissue = data.detect_tissue(slide)
        assert 0.3 < tissue.tissue_area_mm2 < 1.2  # ≈ 0.64 mm² of skin on a 1.1 x 1.5 mm region
        images, coords = data.tile_slide(slide, tile_mpp=0.5, tile_px=224, tissue=tissue)
    assert images.shape[1:] == (224, 224, 3) and 30 <= len(images) <= 80
    assert (coords["x_px"] % 224 == 0).all()
    assert coords.attrs["actual_tile_mpp"] == pytest.approx(0.5, abs=0.005)
    # tissue tiles are stained: mean saturation well above background
    rgb = images.astype(float)
    saturation = (rgb.max(-1) - rgb.min(-1)) / np.maximum(rgb.max(-1), 1)
    assert saturation.mean() > 0.15


def test_pyramid_table_marks_the_level_a_target_resolution_reads(slide_files):
    # the pyramid written at 0.5 µm/px halves per level: a read at 1.0 µm/px uses level 1, at 0.7 level 0
    with data.open_slide(slide_files["folder"] / "tissue.tiff") as slide:
        table = data.pyramid_table(slide, 1.0)
        assert len(table) == slide.level_count >= 2
        assert table.loc[0, "mpp"] == pytest.approx(MPP)
        assert table.loc[1, "downsample"] == pytest.approx(2.0, rel=0.01)
        assert table.index[table["read for target"] == "yes"].tolist() == [1]
        finer = data.pyramid_table(slide, 0.7)
        assert finer.index[finer["read for target"] == "yes"].tolist() == [0]
        with pytest.raises(ValueError, match="target_mpp"):
            data.pyramid_table(slide, -1)
