"""Nuclei segmentation and concepts: hand-made images with known answers, bad input, batch and cache."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from mtlutils import concepts as C
from mtlutils.core import hdf5
from mtlutils.core import io as mio

STROMA_RGB = (235, 160, 200)  # eosin-pink tissue
NUCLEUS_RGB = (85, 60, 150)  # hematoxylin-purple nucleus


def tissue_image(size: int, seed: int = 0) -> np.ndarray:
    """Float image of pink tissue with mild sensor noise (draw on it, then :func:`to_uint8`)."""
    rng = np.random.default_rng(seed)
    return np.asarray(STROMA_RGB, float) + rng.normal(0, 4, (size, size, 3))


def draw_disk(image: np.ndarray, cy: float, cx: float, radius_px: float, rgb=NUCLEUS_RGB) -> None:
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius_px**2] = rgb


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def disk_patch(mpp: float, radius_um: float = 4.0, field_um: float = 64.0) -> np.ndarray:
    size = int(round(field_um / mpp))
    image = tissue_image(size)
    draw_disk(image, size / 2, size / 2, radius_um / mpp)
    return to_uint8(image)


# --------------------------------------------------------------------------------------------------
# Hand-made images with known concepts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_single_disk_area_and_density_in_physical_units(mpp):
    out = C.patch_concepts(disk_patch(mpp), mpp)
    true_area = math.pi * 4.0**2  # µm²
    assert out["n_nuclei"] == 1
    assert out["area"] == pytest.approx(true_area, rel=0.10)
    assert out["tissue_fraction"] == pytest.approx(1.0)
    assert out["count"] == pytest.approx(1 / (64.0 * 64.0 * 1e-6), rel=0.02)  # nuclei per mm² of tissue
    assert math.isnan(out["area_cv"]) and math.isnan(out["eccentricity_sd"])  # undefined for one nucleus
    assert out["hematoxylin"] > 0.3
    assert not out["no_tissue"] and not out["no_nuclei"]


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_two_touching_disks_are_split(mpp):
    size, r = int(64 / mpp), 4.0 / mpp
    image = tissue_image(size, seed=1)
    gap = 1.6 * r  # centres 1.6 radii apart: the disks overlap
    draw_disk(image, size / 2, size / 2 - gap / 2, r)
    draw_disk(image, size / 2, size / 2 + gap / 2, r)
    labels = C.segment_nuclei(to_uint8(image), mpp)
    assert labels.dtype == np.int32
    assert labels.max() == 2
    left, right = (
        labels[int(size / 2), int(size / 2 - gap / 2)],
        labels[int(size / 2), int(size / 2 + gap / 2)],
    )
    assert {left, right} == {1, 2}


def test_separate_disks_of_two_sizes_give_spread_and_shape():
    mpp, size = 0.5, 160
    image = tissue_image(size, seed=2)
    for k, (cy, cx) in enumerate([(30, 30), (30, 110), (110, 30), (110, 110)]):
        draw_disk(image, cy, cx, (3.0 if k % 2 else 5.0) / mpp)
    out = C.patch_concepts(to_uint8(image), mpp)
    assert out["n_nuclei"] == 4
    areas = np.array([math.pi * 9] * 2 + [math.pi * 25] * 2)
    assert out["area"] == pytest.approx(areas.mean(), rel=0.12)
    assert out["area_cv"] == pytest.approx(areas.std(ddof=1) / areas.mean(), abs=0.08)
    assert out["eccentricity_sd"] < 0.2  # all round
    assert np.isfinite(out["nuclear_contrast"])


def test_tissue_without_nuclei_has_count_zero_and_nan_area():
    out = C.patch_concepts(to_uint8(tissue_image(128, seed=3)), 0.5)
    assert out["n_nuclei"] == 0 and out["count"] == 0.0
    assert out["no_nuclei"] and not out["no_tissue"]
    for name in C._NUCLEAR:
        assert math.isnan(out[name]), name
    assert np.isfinite(out["contrast"])  # the patch texture is still defined


def test_blank_background_is_flagged_not_counted():
    out = C.patch_concepts(np.full((128, 128, 3), 245, np.uint8), 0.5)
    assert out["no_tissue"] and not out["no_nuclei"]
    assert out["n_nuclei"] == 0 and out["tissue_fraction"] == 0.0
    assert math.isnan(out["count"]) and math.isnan(out["area"])
    assert math.isnan(out["correlation"])  # undefined for a constant image, never a made-up 1.0
    assert out["contrast"] == 0.0


def test_grey_glass_is_not_tissue_nor_nuclei():
    """Grey background (a scanner's white balance) has optical density but no colour: not tissue."""
    image = tissue_image(128, seed=4)
    image[:, :64] = 226.0  # grey glass on the left half
    draw_disk(image, 64, 96, 8)
    out, labels = C.patch_concepts(to_uint8(image), 0.5, return_labels=True)
    assert out["n_nuclei"] == 1 and labels[:, :60].max() == 0
    assert out["tissue_fraction"] == pytest.approx(0.5, abs=0.05)
    grey = C.patch_concepts(np.full((128, 128, 3), 226, np.uint8), 0.5)
    assert grey["no_tissue"] and grey["n_nuclei"] == 0


def test_every_concept_is_returned_with_unit_and_description():
    out = C.patch_concepts(disk_patch(0.5), 0.5)
    assert set(out) == set(C.CONCEPT_COLUMNS)
    for name, info in {**C.CONCEPTS, **C.QC_FIELDS}.items():
        assert info.unit and info.description, name
    table = C.concept_table()
    assert list(table["name"]) == list(C.CONCEPT_COLUMNS)
    assert {"count", "area", "contrast", "correlation"} <= set(C.CONCEPTS)


def test_labels_are_returned_for_overlays():
    out, labels = C.patch_concepts(disk_patch(0.5), 0.5, return_labels=True)
    assert labels.shape == (128, 128) and labels.max() == out["n_nuclei"] == 1


# --------------------------------------------------------------------------------------------------
# Building blocks against scikit-image
# --------------------------------------------------------------------------------------------------


def test_glcm_matches_scikit_image():
    from skimage.feature import graycomatrix, graycoprops

    rng = np.random.default_rng(0)
    q = (np.cumsum(rng.integers(0, 3, (50, 60)), axis=1) % 32).astype(np.uint8)
    glcm = graycomatrix(
        q, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, symmetric=True, normed=True
    )
    contrast, correlation = C.glcm_features(q)
    assert contrast == pytest.approx(graycoprops(glcm, "contrast").mean(), rel=1e-9)
    assert correlation == pytest.approx(graycoprops(glcm, "correlation").mean(), rel=1e-9)


def test_glcm_within_regions_ignores_pairs_across_regions():
    q = np.zeros((8, 8), np.uint8)
    q[:, 4:] = 31  # a sharp edge between two regions
    regions = np.zeros((8, 8), np.int32)
    regions[:, :4], regions[:, 4:] = 1, 2
    contrast_all, _ = C.glcm_features(q)
    contrast_in, correlation_in = C.glcm_features(q, regions=regions)
    assert contrast_all > 100
    assert contrast_in == 0.0  # each region is flat
    assert correlation_in == pytest.approx(1.0)  # pooled pairs (0, 0) and (31, 31): perfectly correlated
    assert math.isnan(C.glcm_features(np.full((8, 8), 5, np.uint8))[1])  # undefined without variation
    assert C.glcm_features(q, regions=np.zeros_like(regions)) == (pytest.approx(math.nan, nan_ok=True),) * 2


def test_nuclei_properties_match_regionprops():
    from skimage.measure import regionprops_table

    labels = np.zeros((60, 60), np.int32)
    yy, xx = np.mgrid[:60, :60]
    labels[((yy - 15) / 10) ** 2 + ((xx - 15) / 5) ** 2 <= 1] = 1
    labels[(yy - 40) ** 2 + (xx - 40) ** 2 <= 64] = 2
    labels[50:55, 5:25] = 3
    props = C.nuclei_properties(labels, 0.5, h=np.ones((60, 60)))
    ref = regionprops_table(labels, properties=("area", "eccentricity", "centroid"))
    np.testing.assert_allclose(props["area_um2"], ref["area"] * 0.25)
    np.testing.assert_allclose(props["eccentricity"], ref["eccentricity"], atol=1e-9)
    np.testing.assert_allclose(props["centroid_row"], ref["centroid-0"])
    np.testing.assert_allclose(props["hematoxylin"], 1.0)


def test_hematoxylin_od_is_high_in_nuclei_low_in_eosin():
    image = np.array([[NUCLEUS_RGB, STROMA_RGB, (255, 255, 255)]], np.uint8).repeat(40, 0).repeat(40, 1)
    h = C.hematoxylin_od(image)
    assert h[0, 0] > 0.4 > abs(h[0, 60]) and abs(h[0, 100]) < 0.01


def test_optical_density_is_the_one_of_the_stain_module():
    """The segmentation's look-up table is data.stain.optical_density (notebook 01), for every 8-bit value."""
    from mtlutils.concepts import deconvolution
    from mtlutils.data.stain import optical_density

    values = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(deconvolution._OD_LUT, optical_density(values), rtol=0, atol=1e-6)
    image = np.stack(np.meshgrid(values, values[::-1], indexing="ij"), -1)[..., [0, 1, 0]]  # all pairs
    expected = optical_density(image).astype(np.float64) @ C._HED_FROM_RGB[:, 0]
    np.testing.assert_allclose(C.hematoxylin_od(image), expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Bad input: one clear error, never a crash inside scikit-image
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((64, 64, 3), np.float64), "uint8"),
        (np.zeros((64, 64), np.uint8), "RGB"),
        (np.zeros((64, 64, 4), np.uint8), "drop alpha"),
        (np.zeros((16, 64, 3), np.uint8), "at least"),
        ([[0, 0, 0]], "NumPy array"),
    ],
)
def test_bad_images_raise_one_clear_error(image, match):
    with pytest.raises(ValueError, match=match):
        C.patch_concepts(image, 0.5)
    with pytest.raises(ValueError, match=match):
        C.segment_nuclei(image, 0.5)


@pytest.mark.parametrize(
    ("mpp", "match"),
    [
        (0, "positive"),
        (-1, "positive"),
        (float("nan"), "positive"),
        (1.14, "too coarse"),
        ("x", "number"),
        (0.001, "implausibly"),
    ],
)
def test_bad_mpp_raises(mpp, match):
    with pytest.raises(ValueError, match=match):
        C.segment_nuclei(disk_patch(0.5), mpp)


def test_bad_parameters_and_workers_raise():
    with pytest.raises(ValueError, match="min_area_um2"):
        C.SegmentationParams(min_area_um2=-1)
    with pytest.raises(ValueError, match="workers"):
        C.extract_concepts([disk_patch(0.5)], 0.5, workers=0)


def test_empty_and_mismatched_batches_raise():
    with pytest.raises(ValueError, match="no images"):
        C.extract_concepts(np.zeros((0, 64, 64, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="no images"):
        C.extract_concepts([], 0.5)
    with pytest.raises(ValueError, match="mpp values"):
        C.extract_concepts([disk_patch(0.5)] * 2, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"images\[1\]"):
        C.extract_concepts([disk_patch(0.5), np.zeros((64, 64, 3))], 0.5)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        C.extract_concepts(np.zeros((64, 64, 3), np.uint8), 0.5)


# --------------------------------------------------------------------------------------------------
# Batch extraction on arrays
# --------------------------------------------------------------------------------------------------


def test_batch_matches_single_patches_and_mixed_sizes_and_mpps():
    images = [disk_patch(0.5), disk_patch(0.25), to_uint8(tissue_image(100))]
    table = C.extract_concepts(images, [0.5, 0.25, 0.5], chunk_size=2)
    assert list(table.columns) == list(C.CONCEPT_COLUMNS) and len(table) == 3
    assert table["n_nuclei"].tolist() == [1, 1, 0]
    assert table["no_nuclei"].dtype == bool and table["n_nuclei"].dtype == np.int64
    single = C.patch_concepts(images[1], 0.25)
    assert table.loc[1, "area"] == pytest.approx(single["area"])


def test_two_workers_give_the_same_table():
    images = np.stack([disk_patch(0.5), to_uint8(tissue_image(128, 5)), disk_patch(0.5, radius_um=3)])
    one = C.extract_concepts(images, 0.5, workers=1, chunk_size=1)
    two = C.extract_concepts(images, 0.5, workers=2, chunk_size=1)
    pd.testing.assert_frame_equal(one, two)


# --------------------------------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------------------------------


def concept_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: rng.normal(10 * (k + 1), k + 1, n) for k, name in enumerate(C.CONCEPTS)})


def test_scaler_fits_on_training_rows_only_and_keeps_nan(tmp_path):
    train, test = concept_frame(50, 0), concept_frame(20, 1) + 5
    train.loc[3, "area"] = np.nan  # a missing value is ignored when fitting
    test.loc[0, "count"] = np.nan
    scaler = C.ConceptScaler().fit(train, fitted_on="train")
    assert scaler.mean["area"] == pytest.approx(np.nanmean(train["area"]))
    assert scaler.scale["count"] == pytest.approx(train["count"].std(ddof=0))
    z_train = scaler.transform(train)
    assert z_train["count"].mean() == pytest.approx(0, abs=1e-12)
    assert z_train["count"].std(ddof=0) == pytest.approx(1)
    z_test = scaler.transform(test)
    assert np.isnan(z_test.loc[0, "count"]) and np.isnan(z_train.loc[3, "area"])
    assert z_test["count"].mean() > 0.5  # the test split is shifted: not re-centred on itself
    back = scaler.inverse_transform(z_test)
    np.testing.assert_allclose(back.to_numpy(), test[list(C.CONCEPTS)].to_numpy(), rtol=1e-12)
    path = scaler.save(tmp_path / "scaler.json")
    again = C.ConceptScaler.load(path)
    pd.testing.assert_frame_equal(again.transform(test), z_test)
    assert json.loads(path.read_text())["units"]["area"] == "µm²"
    assert C.ConceptScaler.from_dict(scaler.to_dict()).mean == scaler.mean


def test_scaler_errors():
    frame = concept_frame(10, 0)
    with pytest.raises(ValueError, match="not fitted"):
        C.ConceptScaler().transform(frame)
    constant = frame.assign(area=3.0)
    with pytest.raises(ValueError, match="'area'.*constant"):
        C.ConceptScaler().fit(constant)
    with pytest.raises(ValueError, match="finite value"):
        C.ConceptScaler().fit(frame.assign(count=np.nan))
    with pytest.raises(ValueError, match="lacks concept column"):
        C.ConceptScaler().fit(frame.drop(columns="count"))
    lenient = C.ConceptScaler().fit(constant, skip_unfit=True)
    assert "area" not in lenient.names and "constant" in lenient.skipped["area"]
    assert C.ConceptScaler.from_dict(lenient.to_dict()).skipped == lenient.skipped
    with pytest.raises(ValueError, match="not a ConceptScaler"):
        C.ConceptScaler.from_dict({"names": ["area"]})
    scaler = C.ConceptScaler(["area"]).fit(constant.assign(area=np.arange(10.0)))
    assert list(scaler.transform(frame).columns) == ["area"]


# --------------------------------------------------------------------------------------------------
# Patch dataset folders (the layout written by data.tile_cohort) and the CLI entry point
# --------------------------------------------------------------------------------------------------


def disks_patch(mpp: float, radii_um: tuple[float, ...], seed: int = 0, shade: int = 0) -> np.ndarray:
    """64 µm field with separate disks (at most 4) of the given radii, ``shade`` lighter than usual."""
    size = int(round(64 / mpp))
    image = tissue_image(size, seed)
    rgb = tuple(v + shade for v in NUCLEUS_RGB)
    for (fy, fx), r in zip([(0.3, 0.3), (0.7, 0.7), (0.3, 0.7), (0.7, 0.3)], radii_um, strict=False):
        draw_disk(image, fy * size, fx * size, r / mpp, rgb)
    chromatin = np.random.default_rng(seed + 100).normal(0, 4 + shade / 2, image.shape[:2])[..., None]
    image += np.where((image[..., :1] < 150), chromatin, 0)  # texture inside the nuclei only
    return to_uint8(image)


def write_patch_dir(folder: Path, tile_mpp: float = 0.5) -> pd.DataFrame:
    """Two slides in tile_cohort's layout (s1 = train, s2 = test); index rows not in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    blank = np.full((128, 128, 3), 245, np.uint8)
    slides = {
        "s1": [
            disk_patch(tile_mpp),
            to_uint8(tissue_image(128, 7)),
            blank,
            disks_patch(tile_mpp, (3, 5), shade=20),
            disks_patch(tile_mpp, (4, 4.5, 3.5), seed=1, shade=40),
        ],
        "s2": [disk_patch(tile_mpp, radius_um=3.0), disk_patch(tile_mpp, radius_um=5.0)],
    }
    rows = []
    for slide_id, images in slides.items():
        attrs = {"tile_mpp": tile_mpp, "tile_px": 128}
        hdf5.write_h5(folder / f"{slide_id}.h5", {"images": np.stack(images)}, attrs=attrs)
        split = "train" if slide_id == "s1" else "test"
        rows += [
            {"slide_id": slide_id, "center": "A", "split": split, "row": r, "file": f"{slide_id}.h5"}
            for r in range(len(images))
        ]
    index = pd.DataFrame(rows).iloc[[5, 0, 6, 2, 1, 3, 4]].reset_index(drop=True)
    index.to_csv(folder / "index.csv", index=False)
    return index


def test_patch_dir_extraction_is_aligned_cached_and_resumable(tmp_path):
    index = write_patch_dir(tmp_path / "patches")
    folder = tmp_path / "patches"
    table = C.extract_patch_dir_concepts(folder)
    assert table[["slide_id", "row"]].equals(index[["slide_id", "row"]])
    assert table["n_nuclei"].tolist() == [1, 1, 1, 0, 0, 2, 3]
    on_disk = pd.read_csv(folder / C.CONCEPTS_FILE, dtype={"slide_id": str})
    assert len(on_disk) == 7 and on_disk["no_tissue"].tolist() == [
        False,
        False,
        False,
        True,
        False,
        False,
        False,
    ]
    disk_areas = table.set_index(["slide_id", "row"])["area"]
    assert disk_areas[("s2", 0)] < disk_areas[("s1", 0)] < disk_areas[("s2", 1)]
    scaler = C.ConceptScaler.load(folder / C.SCALER_FILE)
    assert scaler.fitted_on == "split == 'train'"
    cache = sorted(p.name for p in (folder / C.CACHE_DIR).iterdir())
    assert cache == ["s1.h5", "s2.h5"]
    assert not [p for p in folder.rglob("*") if mio.is_temp_file(p)]

    read_back = C.read_concepts(folder)
    assert read_back["n_nuclei"].tolist() == table["n_nuclei"].tolist()
    z = C.read_concepts(folder, standardise=True)
    train = z["split"] == "train"
    assert z.loc[train, "count"].mean() == pytest.approx(0, abs=1e-9)
    assert z.loc[train, "count"].std(ddof=0) == pytest.approx(1)
    assert np.isnan(z.loc[read_back["no_tissue"], "count"]).all()  # missing stays missing

    # second run: nothing is recomputed (cache files untouched)
    before = {p: p.stat().st_mtime_ns for p in (folder / C.CACHE_DIR).iterdir()}
    again = C.extract_patch_dir_concepts(folder)
    pd.testing.assert_frame_equal(again, table)
    assert {p: p.stat().st_mtime_ns for p in (folder / C.CACHE_DIR).iterdir()} == before

    # other parameters: recomputed
    C.extract_patch_dir_concepts(folder, params=C.SegmentationParams(min_area_um2=12.0))
    assert (folder / C.CACHE_DIR / "s1.h5").stat().st_mtime_ns != before[folder / C.CACHE_DIR / "s1.h5"]


def test_patch_dataset_from_tile_cohort(tmp_path):
    """End to end on the real layout: synthetic slides -> tile_cohort -> concepts (all centers)."""
    from mtlutils.data import tile_cohort
    from mtlutils.synthetic import generate_cohort

    generate_cohort(tmp_path / "cohort", slides_per_center=1, size_px=768, seed=0, show_progress=False)
    index = tile_cohort(
        tmp_path / "cohort" / "manifest.csv", tmp_path / "patches", max_tiles_per_slide=6, show_progress=False
    )
    table = C.extract_patch_dir_concepts(tmp_path / "patches")
    assert len(table) == len(index) and (table["slide_id"].to_numpy() == index["slide_id"].to_numpy()).all()
    assert not table["no_tissue"].any() and (table["n_nuclei"] > 0).all()
    assert table["area"].between(10, 150).all()  # µm²: nuclei, not background
    scaler = C.ConceptScaler.load(tmp_path / "patches" / C.SCALER_FILE)
    z = scaler.transform(table[table["split"] == "train"])
    assert z["count"].mean() == pytest.approx(0, abs=1e-9)


def test_patch_dir_scaler_leaves_out_concepts_it_cannot_fit(tmp_path):
    write_patch_dir(tmp_path / "p")
    with pytest.warns(UserWarning, match=r"left out of the scaler.*area_cv"):  # one nucleus per test patch
        C.extract_patch_dir_concepts(tmp_path / "p", fit_split="test")
    scaler = C.ConceptScaler.load(tmp_path / "p" / C.SCALER_FILE)
    assert "area_cv" in scaler.skipped and "area" in scaler.names and scaler.fitted_on == "split == 'test'"


def test_patch_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.extract_patch_dir_concepts(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="mtlutils concepts"):
        C.read_concepts(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="index.csv"):
        C.extract_patch_dir_concepts(tmp_path / "empty")
    pd.DataFrame(columns=["slide_id", "split", "row", "file"]).to_csv(
        tmp_path / "empty" / "index.csv", index=False
    )
    with pytest.raises(ValueError, match="no patches"):
        C.extract_patch_dir_concepts(tmp_path / "empty")
    write_patch_dir(tmp_path / "p")
    with pytest.raises(ValueError, match="no patch with split 'training'"):
        C.extract_patch_dir_concepts(tmp_path / "p", fit_split="training")
    os.remove(tmp_path / "p" / "s2.h5")
    with pytest.raises(FileNotFoundError, match="s2.h5"):
        C.extract_patch_dir_concepts(tmp_path / "p")


def test_cli_entry_point(tmp_path, capsys):
    write_patch_dir(tmp_path / "p")
    assert C.extract_concepts_cli(str(tmp_path / "p"), 1) == 0
    assert "wrote 7 rows" in capsys.readouterr().out
    assert (tmp_path / "p" / C.CONCEPTS_FILE).is_file() and (tmp_path / "p" / C.SCALER_FILE).is_file()
    assert C.extract_concepts_cli(str(tmp_path / "missing"), 1) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# --------------------------------------------------------------------------------------------------
# Agreement with ground truth: the synthetic cohort (every center) and the real slide
# --------------------------------------------------------------------------------------------------


def test_agrees_with_synthetic_ground_truth_on_every_center():
    from mtlutils.synthetic import default_centers, render_patch

    for center in [c.name for c in default_centers()]:
        true_count, true_area, found_count, found_area = [], [], [], []
        for seed in range(24):
            image, nuclei = render_patch(
                center, tumour=seed % 2 == 0, size_px=160, mpp=0.5, seed=seed, tme_score=(seed % 4) / 3
            )
            out = C.patch_concepts(image, 0.5)
            true_count.append(len(nuclei))
            true_area.append(nuclei["area_um2"].mean())
            found_count.append(out["n_nuclei"])
            found_area.append(out["area"])
        rho_count = spearmanr(true_count, found_count).statistic
        rho_area = spearmanr(true_area, found_area, nan_policy="omit").statistic
        assert rho_count >= 0.9, (center, rho_count)
        assert rho_area >= 0.8, (center, rho_area)
        assert 0.75 <= np.sum(found_count) / np.sum(true_count) <= 1.25, center  # no gross bias


def test_real_slide_counts_are_stable_across_resolution(real_slide):
    import openslide
    from PIL import Image

    with openslide.OpenSlide(str(real_slide)) as slide:
        mpp = float(slide.properties["openslide.mpp-x"])
        region = np.asarray(
            slide.read_region((700, 2600), 0, (256, 256)).convert("RGB")
        )  # epidermis + dermis
    at_native = C.segment_nuclei(region, mpp).max()
    doubled = np.asarray(Image.fromarray(region).resize((512, 512), Image.BICUBIC))
    at_double = C.segment_nuclei(doubled, mpp / 2).max()
    assert 40 <= at_native <= 90  # its overlay, checked by eye, shows nearly every nucleus (~58) found
    assert abs(at_double - at_native) <= 0.15 * at_native


def restain(image: np.ndarray, h_rgb, e_rgb, h_strength: float, e_strength: float) -> np.ndarray:
    """Re-render an H&E image with other stain colours/strengths (Ruifrok unmixing, Beer-Lambert)."""
    od = -np.log10((image.astype(float) + 1) / 256)
    hed = od @ C._HED_FROM_RGB
    hed[..., 0] *= h_strength
    hed[..., 1] *= e_strength
    mix = np.array([h_rgb, e_rgb, C._RGB_FROM_HED[2]], float)
    mix /= np.linalg.norm(mix, axis=1, keepdims=True)
    return np.clip(255 * 10 ** (-(hed @ mix)) - 0.5, 0, 255).astype(np.uint8)


def test_real_slide_counts_survive_an_unseen_stain(real_slide):
    import openslide

    with openslide.OpenSlide(str(real_slide)) as slide:
        mpp = float(slide.properties["openslide.mpp-x"])
        region = np.asarray(slide.read_region((1100, 1200), 0, (256, 256)).convert("RGB"))
    native = C.segment_nuclei(region, mpp).max()
    for stain in [
        ((0.55, 0.65, 0.52), (0.03, 0.75, 0.66), 1.0, 1.0),  # bluer hematoxylin, orange eosin
        ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), 0.6, 0.8),  # faded
        ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), 0.35, 0.35),  # badly faded
        ((0.70, 0.65, 0.30), (0.25, 0.95, 0.20), 1.3, 1.2),  # darker, purple eosin
    ]:
        assert abs(C.segment_nuclei(restain(region, *stain), mpp).max() - native) <= 0.15 * native, stain


# --------------------------------------------------------------------------------------------------
# What the concepts track: labels, centers, ground truth, stain normalisation
# --------------------------------------------------------------------------------------------------


def test_read_concept_dataset_joins_the_index(tmp_path):
    folder = tmp_path / "p"
    index = write_patch_dir(folder)
    index.assign(label=[1.0, 0.0, np.nan, 0.0, 1.0, 0.0, 1.0], tissue_fraction=0.9, x_px=range(7)).to_csv(
        folder / "index.csv", index=False
    )
    C.extract_patch_dir_concepts(folder)
    data = C.read_concept_dataset(folder)
    assert len(data) == 7 and data["x_px"].tolist() == list(range(7))
    assert data["tissue"].tolist() == ["tumour", "normal", "unknown", "normal", "tumour", "normal", "tumour"]
    assert (data["tile_tissue_fraction"] == 0.9).all()  # the index's (thumbnail) fraction, renamed
    assert data["tissue_fraction"].tolist() == C.read_concepts(folder)["tissue_fraction"].tolist()
    assert C.patch_dir_mpp(folder) == 0.5
    index.iloc[::-1].to_csv(folder / "index.csv", index=False)  # tiled again: rows no longer match
    with pytest.raises(ValueError, match="does not match"):
        C.read_concept_dataset(folder)


def _confounded_table(seed: int = 0, n: int = 600) -> pd.DataFrame:
    """Centers A/B/C with tumour prevalence 0.8/0.5/0.2. ``tissue`` depends on the label only,
    ``stain`` on the center only, ``both`` on both, ``noise`` on nothing."""
    rng = np.random.default_rng(seed)
    center = rng.choice(["A", "B", "C"], n)
    label = (rng.uniform(size=n) < pd.Series(center).map({"A": 0.8, "B": 0.5, "C": 0.2}).to_numpy()).astype(
        float
    )
    shift = pd.Series(center).map({"A": 0.0, "B": 2.0, "C": 4.0}).to_numpy()
    return pd.DataFrame(
        {
            "center": center,
            "label": label,
            "tissue": 2.0 * label + rng.normal(size=n),
            "stain": shift + rng.normal(size=n),
            "both": label + shift + rng.normal(size=n),
            "noise": rng.normal(size=n),
        }
    )


def test_label_association_auc_matches_scikit_learn_and_sees_through_the_confounder():
    from sklearn.metrics import roc_auc_score

    table = _confounded_table()
    out = C.concept_label_association(table, ["tissue", "stain", "noise"])
    for name in ("tissue", "stain", "noise"):
        assert out.loc[name, "auc"] == pytest.approx(roc_auc_score(table["label"], table[name]))
        assert out.loc[name, "r_pb"] == pytest.approx(np.corrcoef(table[name], table["label"])[0, 1])
    assert out.loc["tissue", "auc"] > 0.85 and out.loc["tissue", "auc_within"] > 0.85
    # stain is higher in C, where tumour is rare: pooled it "predicts" normal, within centers it is chance
    assert out.loc["stain", "auc"] < 0.3 and out.loc["stain", "separation"] > 0.7
    assert abs(out.loc["stain", "auc_within"] - 0.5) < 0.08
    assert {"auc_A", "auc_B", "auc_C"} <= set(out.columns)
    assert out.loc["stain", "p_value"] < 1e-6 and out.loc["noise", "p_value"] > 1e-3
    pooled_only = C.concept_label_association(table, ["tissue"], by=None)
    assert "auc_within" not in pooled_only.columns


def test_label_association_perfect_reversed_and_missing_values():
    table = pd.DataFrame(
        {"label": [0, 0, 1, 1, np.nan], "up": [1.0, 2, 3, 4, 5], "down": [4.0, 3, 2, np.nan, 0]}
    )
    out = C.concept_label_association(table, ["up", "down"], by=None)
    assert out.loc["up", "auc"] == 1.0 and out.loc["up", "n"] == 4
    assert (
        out.loc["down", "auc"] == 0.0 and out.loc["down", "separation"] == 1.0 and out.loc["down", "n"] == 3
    )
    with pytest.raises(ValueError, match="0/1 labels"):
        C.concept_label_association(table.assign(label=[0, 1, 2, 1, 0]), ["up"], by=None)
    with pytest.raises(ValueError, match="lacks concept"):
        C.concept_label_association(table, ["area"], by=None)
    with pytest.raises(ValueError, match="group column 'center'"):
        C.concept_label_association(table, ["up"])


def test_center_association_eta2_and_kruskal_match_scipy():
    from scipy.stats import kruskal

    table = _confounded_table()
    out = C.concept_center_association(table, ["stain", "noise"])
    groups = [table.loc[table["center"] == c, "stain"].to_numpy() for c in "ABC"]
    x = table["stain"].to_numpy()
    ss_between = sum(len(g) * (g.mean() - x.mean()) ** 2 for g in groups)
    assert out.loc["stain", "eta2"] == pytest.approx(ss_between / ((x - x.mean()) ** 2).sum())
    assert out.loc["stain", "eta2"] > 0.7 and out.loc["noise", "eta2"] < 0.02
    h = kruskal(*groups).statistic
    assert out.loc["stain", "kw_h"] == pytest.approx(h) and out.loc["stain", "kw_df"] == 2
    assert out.loc["stain", "epsilon2"] == pytest.approx(h / (len(x) - 1))
    assert out.loc["noise", "p_value"] == pytest.approx(
        kruskal(*[table.loc[table["center"] == c, "noise"] for c in "ABC"]).pvalue
    )


def test_center_association_stratified_by_label_removes_the_prevalence_effect():
    table = _confounded_table(seed=1, n=1500)
    naive = C.concept_center_association(table, ["tissue", "stain"])
    stratified = C.concept_center_association(table, ["tissue", "stain"], within="label")
    normal_only = C.concept_center_association(table[table["label"] == 0], ["tissue", "stain"])
    assert naive.loc["tissue", "eta2"] > 0.08  # ~0.12: the label differs between centers
    assert stratified.loc["tissue", "eta2"] < 0.01 and normal_only.loc["tissue", "eta2"] < 0.01
    assert stratified.loc["stain", "eta2"] > 0.6  # a real center effect stays (~0.68 here)
    assert stratified.loc["tissue", "kw_df"] == 4  # 2 strata x (3 centers - 1)
    assert stratified.loc["tissue", "p_value"] > 1e-3 and stratified.loc["stain", "p_value"] < 1e-12
    one_center = C.concept_center_association(table[table["center"] == "A"], ["stain"])
    assert np.isnan(one_center.loc["stain", "eta2"]) and one_center.loc["stain", "kw_df"] == 0
    with pytest.raises(ValueError, match="stratum column 'grade'"):
        C.concept_center_association(table, ["stain"], within="grade")


def test_ground_truth_agreement_pooled_and_by_group():
    rng = np.random.default_rng(0)
    truth = pd.DataFrame({"count": rng.uniform(1000, 5000, 90), "area": rng.uniform(20, 90, 90)})
    measured = pd.DataFrame(
        {
            "center": np.repeat(["A", "B", "C"], 30),
            "count": truth["count"] * 0.9,  # biased but perfectly ranked
            "area": truth["area"] + rng.normal(0, 30, 90),  # noisy
        }
    )
    measured.loc[5, "area"] = np.nan
    out = C.ground_truth_agreement(measured, truth, pairs={"count": "count", "area": "area"})
    table = out.set_index(["concept", "group"])
    assert list(out["group"].unique()) == ["all", "A", "B", "C"]
    assert table.loc[("count", "all"), "spearman"] == pytest.approx(1.0)
    assert table.loc[("count", "B"), "median_ratio"] == pytest.approx(0.9)
    assert table.loc[("area", "all"), "n"] == 89 and table.loc[("area", "A"), "n"] == 29
    assert 0.2 < table.loc[("area", "all"), "spearman"] < 0.9
    with pytest.raises(ValueError, match="row-aligned"):
        C.ground_truth_agreement(measured.iloc[:10], truth)
    with pytest.raises(ValueError, match="ground-truth column 'area_cv'"):
        C.ground_truth_agreement(measured, truth, pairs={"area": "area_cv"})


def test_normalisation_effect_compares_each_method_with_the_reference():
    base = _confounded_table(seed=2, n=300)
    scaled = base.assign(stain=base["stain"] * 2 + 1, tissue=base["tissue"])
    flattened = base.assign(stain=base["stain"] - base.groupby("center")["stain"].transform("mean") + 10)
    out = C.normalisation_effect(
        {"none": base, "scaled": scaled, "flat": flattened}, ["tissue", "stain"], within=None
    ).set_index(["method", "concept"])
    assert out.loc[("none", "stain"), "spearman"] == pytest.approx(1.0)
    assert out.loc[("none", "stain"), "median_change"] == pytest.approx(0.0)
    assert out.loc[("scaled", "stain"), "spearman"] == pytest.approx(1.0)
    assert out.loc[("scaled", "stain"), "eta2"] == pytest.approx(out.loc[("none", "stain"), "eta2"])
    assert out.loc[("flat", "stain"), "eta2"] < 0.01 < out.loc[("none", "stain"), "eta2"]
    assert out.loc[("flat", "tissue"), "median_change"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="reference='raw'"):
        C.normalisation_effect({"none": base}, ["stain"], reference="raw")
    with pytest.raises(ValueError, match="same patches"):
        C.normalisation_effect({"none": base, "x": base.iloc[:5]}, ["stain"])


# --------------------------------------------------------------------------------------------------
# Figures for the concepts notebook (mtlutils.plotting)
# --------------------------------------------------------------------------------------------------


def test_segmentation_overlay_outlines_each_nucleus_and_marks_points():
    from mtlutils import plotting
    from mtlutils.plotting import segmentation_overlay

    image = np.full((20, 20, 3), 200, np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:14] = 2  # touching nucleus: the shared border is outlined too
    out = segmentation_overlay(image, labels, color=(0, 255, 0), points=[[15.5, 15.5]])
    green = (out == (0, 255, 0)).all(axis=-1)
    assert green[2, 2] and green[7, 5] and green[4, 7] and green[4, 8]  # outer and shared edges
    assert not green[4, 4] and not green[0, 0]  # interior and background untouched
    marks = (out == plotting.TRUTH_RGB).all(axis=-1)
    assert marks[15, 15] and marks[12, 15] and marks[15, 18] and (out[15, 19] == 0).all()  # edged cross
    assert (image == 200).all()  # a new array
    thick = segmentation_overlay(image, labels, color=(0, 255, 0), thickness=2)
    assert ((thick == (0, 255, 0)).all(axis=-1)).sum() > green.sum()
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_overlay(image, labels[:10])
    with pytest.raises(ValueError, match="uint8"):
        segmentation_overlay(image.astype(float), labels)


def test_heatmap_and_scatter_panels_are_saved_under_the_run_folder(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from mtlutils import plotting

    monkeypatch.setenv(plotting.RUN_DIR_ENV, str(tmp_path))
    table = pd.DataFrame({"auc": [0.8, 0.4], "eta2": [0.1, np.nan]}, index=["count", "area"])
    fig = plotting.heatmap(table, name="t_heatmap", title="x", vmin=0, vmax=1)
    assert (tmp_path / "figures" / "t_heatmap.png").is_file()
    assert len(fig.axes[0].texts) == 3  # one annotation per finite cell
    df = pd.DataFrame({"a": [1.0, 2, 3], "b": [1.0, 2.5, 2.9], "c": [3.0, 2, 1], "g": ["A", "B", "A"]})
    fig2 = plotting.scatter_panels(
        df, [("a", "b"), ("a", "c")], hue="g", titles=["one", "two"], name="t_scatter"
    )
    assert (tmp_path / "figures" / "t_scatter.png").is_file() and fig2.axes[1].get_title() == "two"
    plt.close("all")
    with pytest.raises(ValueError, match="lacks column"):
        plotting.scatter_panels(df, [("a", "zz")])
    with pytest.raises(ValueError, match="empty"):
        plotting.heatmap(table.iloc[:0])
    two = plotting.heatmap(
        table,
        blocks=[
            {"columns": ["auc"], "vmin": 0, "vmax": 1, "label": "AUC"},
            {"columns": ["eta2"], "label": "η²"},
        ],
    )
    assert len(two.axes) == 4  # two panels, each with its own colour bar
    with pytest.raises(ValueError, match="lacks"):
        plotting.heatmap(table, blocks=[{"columns": ["nope"]}])
    plt.close("all")


def test_segmentation_steps_shows_every_intermediate_of_the_segmentation():
    """Does the steps figure get every picture it needs from segment_with_maps, with µm axes?"""
    import matplotlib.pyplot as plt

    from mtlutils import plotting
    from mtlutils.concepts.segment import segment_with_maps

    image = disk_patch(0.5)
    labels, extras = segment_with_maps(image, 0.5, C.DEFAULT_PARAMS)
    assert {"h", "foreground", "distance", "markers", "basins"} <= set(extras)
    assert extras["markers"].shape[1] == 2 and extras["basins"].max() >= labels.max() == 1
    fig = plotting.segmentation_steps(image, labels, extras, 0.5, truth=labels)
    assert len([ax for ax in fig.axes if ax.get_xlabel() == "x (µm)"]) == 6
    blank = segment_with_maps(to_uint8(tissue_image(64)), 0.5, C.DEFAULT_PARAMS)
    with pytest.raises(ValueError, match="no nuclear population"):
        plotting.segmentation_steps(to_uint8(tissue_image(64)), *blank, 0.5)
    plt.close("all")
