"""PanNuke adapter on a small fold written here in PanNuke's format (no download)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mtlutils import concepts as C
from mtlutils.concepts import pannuke as P

SIZE = 128  # PanNuke patches are 256 px; the adapter does not depend on it


def make_fold(folder: Path, nested: bool = False) -> dict[str, object]:
    """Write a 3-patch fold: float64 images (0-255), 6-channel instance masks, tissue types."""
    rng = np.random.default_rng(0)
    images = np.empty((3, SIZE, SIZE, 3), np.float64)
    images[:] = (235.0, 160.0, 200.0)
    images += rng.normal(0, 4, images.shape)
    masks = np.zeros((3, SIZE, SIZE, 6), np.float64)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    # (patch, channel, instance id, centre row, centre col, radius px); ids repeat across channels
    nuclei = [
        (0, 0, 7, 30, 30, 14),
        (0, 0, 9, 90, 40, 10),
        (0, 1, 7, 40, 95, 9),
        (0, 4, 3, 100, 100, 12),
        (1, 2, 1, 64, 64, 16),
    ]
    for patch, channel, ident, cy, cx, r in nuclei:
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        masks[patch, ..., channel][disk] = ident
        images[patch][disk] = (85.0, 60.0, 150.0)
    masks[..., 5] = (masks[..., :5].sum(axis=-1) == 0).astype(np.float64)
    types = np.array(["Breast", "Colon", "Breast"])
    if nested:
        (folder / "images" / "fold1").mkdir(parents=True)
        (folder / "masks" / "fold1").mkdir(parents=True)
        np.save(folder / "images" / "fold1" / "images.npy", images)
        np.save(folder / "images" / "fold1" / "types.npy", types)
        np.save(folder / "masks" / "fold1" / "masks.npy", masks)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", images)
        np.save(folder / "masks.npy", masks)
        np.save(folder / "types.npy", types)
    return {"nuclei": nuclei, "types": types}


@pytest.mark.parametrize("nested", [False, True])
def test_ground_truth_concepts_from_instance_masks(tmp_path, nested):
    made = make_fold(tmp_path / "fold1", nested=nested)
    gt = P.ground_truth_concepts(tmp_path / "fold1")
    assert gt["tissue"].tolist() == ["Breast", "Colon", "Breast"]
    assert gt["n_nuclei"].tolist() == [4, 1, 0]  # (channel, id) pairs: id 7 in two channels = 2 nuclei
    assert gt.loc[0, ["n_neoplastic", "n_inflammatory", "n_epithelial"]].tolist() == [2, 1, 1]
    assert gt.loc[1, "n_connective"] == 1
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disk_px = np.sum((yy - 64) ** 2 + (xx - 64) ** 2 <= 16 * 16)
    assert gt.loc[1, "area"] == pytest.approx(disk_px * P.PANNUKE_MPP**2)  # µm² at 0.25 µm/px
    assert gt.loc[1, "area"] == pytest.approx(math.pi * (16 * 0.25) ** 2, rel=0.03)
    field_mm2 = (SIZE * P.PANNUKE_MPP / 1000) ** 2
    assert gt.loc[0, "count"] == pytest.approx(4 / field_mm2)  # all tissue: per mm² of the patch
    assert gt.loc[2, "count"] == 0.0 and math.isnan(gt.loc[2, "area"]) and math.isnan(gt.loc[1, "area_cv"])
    assert gt.loc[0, "area_cv"] > 0
    assert len(made["nuclei"]) == gt["n_nuclei"].sum()


def test_our_segmentation_matches_the_fixture_ground_truth(tmp_path):
    make_fold(tmp_path / "f")
    fold = P.load_fold(tmp_path / "f")
    images = np.stack([P.image_uint8(fold.images[i]) for i in range(len(fold))])
    ours = C.extract_concepts(images, P.PANNUKE_MPP)
    gt = P.ground_truth_concepts(fold)
    assert ours["n_nuclei"].tolist() == gt["n_nuclei"].tolist()
    np.testing.assert_allclose(ours["area"][:2], gt["area"][:2], rtol=0.12)
    np.testing.assert_allclose(ours["count"], gt["count"], rtol=1e-9)  # same tissue denominator


def test_instance_map_numbers_nuclei_over_channels():
    mask = np.zeros((10, 10, 6))
    mask[0:2, 0:2, 0] = 5
    mask[5:7, 5:7, 0] = 2
    mask[0:2, 5:7, 3] = 5
    labels, classes = P.instance_map(mask)
    assert labels.dtype == np.int32 and labels.max() == 3
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3]
    assert classes.tolist() == [0, 0, 3]
    assert P.instance_map(np.zeros((4, 4, 6)))[0].max() == 0


def test_subset_of_indices(tmp_path):
    make_fold(tmp_path / "f")
    gt = P.ground_truth_concepts(tmp_path / "f", indices=[2, 0])
    assert gt["index"].tolist() == [2, 0] and gt["n_nuclei"].tolist() == [0, 4]
    with pytest.raises(ValueError, match="indices"):
        P.ground_truth_concepts(tmp_path / "f", indices=[3])
    with pytest.raises(ValueError, match="no patch indices"):
        P.ground_truth_concepts(tmp_path / "f", indices=[])


def test_bad_folds_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        P.load_fold(tmp_path / "nope")
    make_fold(tmp_path / "f")
    (tmp_path / "f" / "types.npy").unlink()
    with pytest.raises(FileNotFoundError, match="types.npy"):
        P.load_fold(tmp_path / "f")
    make_fold(tmp_path / "g")
    np.save(tmp_path / "g" / "masks.npy", np.zeros((3, SIZE, SIZE, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W, 6\)"):
        P.load_fold(tmp_path / "g")
    make_fold(tmp_path / "two" / "a")
    make_fold(tmp_path / "two" / "b")
    with pytest.raises(ValueError, match="several"):
        P.load_fold(tmp_path / "two")
    make_fold(tmp_path / "obj")
    np.save(tmp_path / "obj" / "types.npy", np.array(["Breast", None, 3], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="re-save"):
        P.load_fold(tmp_path / "obj")


def test_image_conversion():
    assert P.image_uint8(np.full((2, 2, 3), 254.6)).tolist() == [[[255] * 3] * 2] * 2
    with pytest.raises(ValueError, match="multiply by 255"):
        P.image_uint8(np.full((2, 2, 3), 0.5))
    with pytest.raises(ValueError, match="dtype"):
        P.image_uint8(np.zeros((2, 2, 3), np.int16))
