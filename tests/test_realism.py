"""Realism comparison of tile sets: known answers on identical, shifted and glass-only sets."""

from __future__ import annotations

import numpy as np
import pytest

from mtlutils.synthetic import realism


def _tiles(seed: int, n: int = 6, size: int = 48, shift: float = 0.0) -> np.ndarray:
    """Random pink-purple tiles; ``shift`` adds this much OD to every channel (a darker stain)."""
    rng = np.random.default_rng(seed)
    od = rng.uniform(0.2, 1.2, size=(n, size, size, 3)) * np.array([0.6, 1.0, 0.5]) + shift
    return np.clip(240.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)


def test_identical_sets_are_at_distance_zero():
    tiles = _tiles(0)
    table = realism.compare_tiles(tiles, tiles.copy())
    assert list(table.columns) == ["synthetic", "real", "wasserstein", "wasserstein_per_sd", "intersection"]
    assert list(table.index) == ["od_r", "od_g", "od_b", *realism.TILE_STATISTICS]
    assert np.allclose(table["wasserstein"], 0.0)
    assert np.allclose(table.loc[["od_r", "od_g", "od_b"], "intersection"], 1.0)
    assert table.loc[list(realism.TILE_STATISTICS), "intersection"].isna().all()


def test_a_shifted_set_is_farther_and_the_distance_grows_with_the_shift():
    base = _tiles(0)
    other = realism.compare_tiles(base, _tiles(1))  # same distribution, other draw
    near = realism.compare_tiles(base, _tiles(1, shift=0.1))
    far = realism.compare_tiles(base, _tiles(1, shift=0.3))
    od = ["od_r", "od_g", "od_b"]
    assert (other.loc[od, "wasserstein"] < 0.02).all()
    assert (near.loc[od, "wasserstein"] > other.loc[od, "wasserstein"] + 0.05).all()
    assert (far.loc[od, "wasserstein"] > near.loc[od, "wasserstein"] + 0.1).all()
    # a uniform OD shift moves the pixel distribution by about the shift (uint8 rounding aside)
    assert far.loc["od_g", "wasserstein"] == pytest.approx(0.3, abs=0.03)
    assert (far.loc[od, "intersection"] < near.loc[od, "intersection"]).all()
    assert far.loc["od_mean_g", "real"] > far.loc["od_mean_g", "synthetic"]


def test_histograms_sum_to_one_and_glass_is_left_out():
    tiles = list(_tiles(2, n=2))
    glass = np.full((32, 32, 3), 245, np.uint8)
    hist = realism.od_histograms([*tiles, glass])
    assert hist.shape == (3, len(realism.OD_BINS) - 1) and np.allclose(hist.sum(axis=1), 1.0)
    assert np.allclose(hist, realism.od_histograms(tiles))  # glass pixels carry no stain
    assert len(realism.tissue_od(glass)) == 0
    stats = realism.texture_statistics([glass, tiles[0]])
    assert np.isnan(stats.loc[0, "od_mean_r"]) and stats.loc[0, "glcm_contrast"] == 0.0
    assert stats.loc[1, "glcm_contrast"] > 0 and 0 < stats.loc[1, "glcm_homogeneity"] < 1


def test_tiles_of_different_sizes_and_bad_inputs():
    mixed = [_tiles(3, n=1, size=40)[0], _tiles(4, n=1, size=64)[0]]
    assert len(realism.texture_statistics(mixed)) == 2
    with pytest.raises(ValueError, match="empty"):
        realism.compare_tiles([], mixed)
    with pytest.raises(ValueError, match="RGB"):
        realism.od_histograms([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="names"):
        realism.compare_tiles(mixed, mixed, names=("x", "x"))


def test_plot_od_histograms_draws_one_line_per_set():
    import matplotlib

    matplotlib.use("Agg")
    fig = realism.plot_od_histograms({"a": _tiles(0, n=2), "b": _tiles(1, n=2, shift=0.2)})
    assert len(fig.axes) == 3 and all(len(ax.lines) == 2 for ax in fig.axes)


def test_read_tiles_resizes_to_the_target_resolution(tmp_path):
    from PIL import Image

    paths = []
    for k in range(3):
        paths.append(tmp_path / f"crop{k}.png")
        Image.fromarray(_tiles(k, n=1, size=64)[0]).save(paths[-1])
    tiles = realism.read_tiles(paths, mpp=0.25, target_mpp=0.5)
    assert len(tiles) == 3 and all(t.shape == (32, 32, 3) and t.dtype == np.uint8 for t in tiles)
    assert len(realism.read_tiles(paths, mpp=0.5, target_mpp=0.5, n=2, seed=1)) == 2
