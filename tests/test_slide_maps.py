"""mtlutils.interpret.slide_maps: tiles land on the right thumbnail pixels, values paint, Spearman is guarded."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

from mtlutils.interpret import slide_maps as sm

matplotlib.use("Agg")


def test_a_tile_lands_on_the_right_pixels_at_integer_downsamples():
    # a 96 px tile with its corner at level-0 (192, 96): at downsample 4 it covers thumbnail x 48..71, y 24..47
    box = sm.tile_boxes([[192, 96]], 96, 4)
    assert box.tolist() == [[48, 24, 72, 48]]
    assert sm.tile_boxes([[192, 96]], 96, 1).tolist() == [[192, 96, 288, 192]]
    assert sm.tile_boxes([[192, 96]], 96, 32).tolist() == [[6, 3, 9, 6]]
    # a painted map puts the value there and nowhere else
    img = sm.paint([7.0], box, (60, 80))
    assert np.all(img[24:48, 48:72] == 7.0)
    assert np.isnan(img[23, 48]) and np.isnan(img[48, 48]) and np.isnan(img[24, 47]) and np.isnan(img[24, 72])
    assert np.isfinite(img).sum() == 24 * 24


def test_non_integer_downsample_follows_the_pixel_centre_rule():
    # downsample 2.5: thumbnail pixel i covers level-0 [2.5 i, 2.5 i + 2.5), centre 2.5 i + 1.25.
    # tile x in [100, 196): centres 101.25 (i=40) .. 193.75 (i=77) inside -> pixels 40..77 (x1 = 78)
    # tile y in [10, 106): centre of i=4 is 11.25 >= 10, of i=3 is 8.75 < 10 -> y0 = 4; i=42 -> 106.25 out
    assert sm.tile_boxes([[100, 10]], 96, 2.5).tolist() == [[40, 4, 78, 42]]
    # downsample 3.2: x in [0, 96): centres 1.6 + 3.2 i < 96 -> i <= 29; y in [96, 192): i from 30 to 59
    assert sm.tile_boxes([[0, 96]], 96, 3.2).tolist() == [[0, 30, 30, 60]]
    # downsample 7: 96 / 7 is not whole; centre 3.5 + 7 i in [96, 192) -> i in 14..26
    assert sm.tile_boxes([[96, 0]], 96, 7).tolist() == [[14, 0, 27, 14]]


@pytest.mark.parametrize("downsample", [1.0, 3.0, 2.5, 4.0, 5.3, 9.7])
def test_grid_of_tiles_tiles_the_thumbnail_without_gaps_or_overlaps(downsample):
    cols, rows = np.meshgrid(np.arange(5), np.arange(4))
    coords = np.c_[cols.ravel(), rows.ravel()] * 96
    boxes = sm.tile_boxes(coords, 96, downsample)
    shape = sm.thumbnail_shape(boxes)
    assert shape == (math.ceil(4 * 96 / downsample - 0.5), math.ceil(5 * 96 / downsample - 0.5))
    cover = np.zeros(shape, int)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] += 1
    assert np.all(cover == 1)
    # the tile index painted back: every pixel names the tile whose level-0 extent holds its centre
    ids = sm.paint(np.arange(len(coords)), boxes, shape)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    expected = (np.floor((yy + 0.5) * downsample / 96) * 5 + np.floor((xx + 0.5) * downsample / 96)).astype(
        int
    )
    assert np.array_equal(ids.astype(int), expected)


def test_paint_and_mosaic():
    boxes = sm.tile_boxes([[0, 0], [96, 96]], 96, 4)
    shape = sm.thumbnail_shape(boxes)
    assert shape == (48, 48)
    painted = sm.paint([1.5, -2.0], boxes, shape, fill=0.0)
    assert painted[:24, :24].tolist() == np.full((24, 24), 1.5).tolist()
    assert np.all(painted[24:, 24:] == -2.0) and np.all(painted[:24, 24:] == 0.0)
    with pytest.raises(ValueError, match="values for"):
        sm.paint([1.0], boxes, shape)
    tiles = np.stack([np.full((96, 96, 3), 10, np.uint8), np.full((96, 96, 3), 200, np.uint8)])
    thumb = sm.mosaic(tiles, boxes, shape)
    assert thumb.shape == (48, 48, 3) and thumb.dtype == np.uint8
    assert np.all(thumb[:24, :24] == 10) and np.all(thumb[24:, 24:] == 200) and np.all(thumb[:24, 24:] == 255)


def test_spearman_summary_on_planted_slides():
    rng = np.random.default_rng(0)
    truth = [rng.permutation(10).astype(float) for _ in range(4)]
    perfect = sm.spearman_summary([2 * t + 1 for t in truth], truth)
    assert perfect["median"] == pytest.approx(1.0) and perfect["share_positive"] == 1.0
    assert perfect["n_slides"] == perfect["n_scored"] == 4 and perfect["n_constant"] == 0
    anti = sm.spearman_summary([-t for t in truth], truth)
    assert anti["median"] == pytest.approx(-1.0) and anti["q75"] == pytest.approx(-1.0)
    assert anti["share_positive"] == 0.0
    # constant attention or constant truth: excluded and counted, never a NaN in the median
    mixed = sm.spearman_summary(
        [truth[0], np.full(10, 0.1), truth[2], truth[3][:3]], [truth[0], truth[1], np.zeros(10), truth[3][:3]]
    )
    assert mixed == {
        "median": pytest.approx(1.0),
        "q25": pytest.approx(1.0),
        "q75": pytest.approx(1.0),
        "share_positive": 1.0,
        "n_slides": 3,
        "n_scored": 1,
        "n_constant": 2,
        "n_small": 1,
        "min_tiles": 5,
    }
    assert math.isnan(sm.slide_spearman(np.ones(6), np.arange(6)))
    empty = sm.spearman_summary([np.ones(6)], [np.arange(6)])
    assert math.isnan(empty["median"]) and empty["n_scored"] == 0 and empty["n_constant"] == 1


def test_pick_slides_takes_the_most_confident_right_and_wrong():
    tiles = pd.DataFrame(
        {
            "patient_id": ["a"] * 6 + ["b"] * 6 + ["c"] * 6 + ["d"] * 2,
            "slide_id": list("AAAAAABBBBBBCCCCCCDD"),
        }
    )
    picked = sm.pick_slides(["a", "b", "c", "d"], [1, 0, 1, 1], [0.9, 0.8, 0.6, 0.0], tiles)
    assert picked == {"correct": ("a", "A"), "wrong": ("b", "B")}  # d is wronger but has 2 tiles only
    assert sm.pick_slides(["a"], [1], [0.9], tiles)["wrong"] is None


def test_slide_figure_runs_on_a_tiny_fake_slide(tmp_path, monkeypatch):
    from mtlutils.core.runner import RUN_DIR_ENV

    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    tiles = pd.DataFrame(
        {
            "x_px": [0, 96, 96, 192],
            "y_px": [0, 0, 96, 96],
            "attention": [0.1, 0.4, 0.2, 0.3],
            "lymph_per_mm2": [0.0, 300.0, 120.0, 80.0],
            "tumour": [0, 1, 1, 0],
        }
    )
    images = np.random.default_rng(0).integers(0, 255, (4, 96, 96, 3), dtype=np.uint8)
    maps = sm.slide_maps(tiles, images, 96, "fake slide: P = 0.70", downsample=3.5)
    assert maps.thumbnail.shape[:2] == maps.attention.shape == maps.density.shape == (55, 82)
    assert np.nanmax(maps.attention) == 0.4 and np.isnan(maps.attention[40, 5])  # no tile there
    fig = sm.slide_figure([maps, maps], name="fake_slide")
    assert len(fig.axes) == 2 * 3 + 2 * 2  # three panels and two colour bars per slide
    assert (tmp_path / "figures" / "fake_slide.png").is_file()
    with pytest.raises(ValueError, match="no slides"):
        sm.slide_figure([])
