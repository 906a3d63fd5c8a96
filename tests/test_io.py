"""Atomic writes, writable folders, the pyramidal TIFF writer and the HDF5 cache helpers."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest

from mtlutils.core import hdf5
from mtlutils.core import io as mio
from mtlutils.data import pyramid


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with mio.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and mio.is_temp_file(tmp)
        tmp.write_text("complete")
        assert not target.exists()  # nothing under the final name while writing
    assert target.read_text() == "complete"

    with pytest.raises(RuntimeError), mio.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "complete"  # old content kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left


def test_atomic_write_json_and_text(tmp_path):
    path = mio.atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "arr": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 1.5, "arr": [0, 1, 2]}
    assert mio.atomic_write_text(tmp_path / "b.txt", "héllo").read_text(encoding="utf-8") == "héllo"


def test_ensure_writable_dir_creates_nested_folders(tmp_path):
    folder = mio.ensure_writable_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and list(folder.iterdir()) == []  # probe file removed


def test_ensure_writable_dir_under_a_file_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(mio.UnwritableDirError, match="not_a_folder") as info:
        mio.ensure_writable_dir(blocker / "out")
    assert "\n" not in str(info.value) and "output folder" in str(info.value)
    with pytest.raises(mio.UnwritableDirError, match="exists as a file"):
        mio.ensure_writable_dir(blocker)


def test_ensure_writable_dir_read_only_folder(tmp_path, monkeypatch):
    # chmod does not stop root (CI runs as root), so the refusal is simulated where the probe file is
    # written: the same OSError a read-only folder or file system raises for a normal user
    folder = tmp_path / "ro"
    folder.mkdir()
    real_write = Path.write_bytes

    def read_only(self, data):
        if self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    with pytest.raises(mio.UnwritableDirError, match="not writable \\(Permission denied\\)") as info:
        mio.ensure_writable_dir(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    assert mio.ensure_writable_dir(tmp_path / "rw") == tmp_path / "rw"  # other folders still pass


@pytest.fixture(scope="module")
def random_rgb():
    return np.random.default_rng(0).integers(0, 256, size=(2048, 2048, 3), dtype=np.uint8)


def test_pyramidal_tiff_round_trips_through_openslide(tmp_path, random_rgb):
    path = tmp_path / "slide.tiff"
    pyramid.write_pyramidal_tiff(path, random_rgb, mpp=0.5)
    with openslide.OpenSlide(path) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-6)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.5, rel=1e-6)
        assert slide.level_count == 4  # 2048 → 1024 → 512 → 256 (min_level_px)
        assert slide.level_dimensions[1] == (1024, 1024)
        assert slide.level_downsamples[1] == pytest.approx(2.0)
        level0 = np.asarray(slide.read_region((0, 0), 0, (2048, 2048)))[..., :3]
        np.testing.assert_array_equal(level0, random_rgb)
        level1 = np.asarray(slide.read_region((0, 0), 1, (1024, 1024)))[..., :3].astype(float)
    expected = random_rgb.reshape(1024, 2, 1024, 2, 3).mean(axis=(1, 3))
    assert np.abs(level1 - expected).max() <= 0.5 + 1e-9  # 2x2 mean, rounded


def test_pyramidal_tiff_without_mpp_and_odd_sizes(tmp_path, random_rgb):
    path = tmp_path / "nompp.tiff"
    pyramid.write_pyramidal_tiff(path, random_rgb[:1001, :1537], mpp=None, tile=128)
    with openslide.OpenSlide(path) as slide:
        assert "openslide.mpp-x" not in slide.properties
        assert slide.dimensions == (1537, 1001)
        assert slide.level_dimensions[1] == (768, 500)
        assert slide.level_count == 3  # 1537 → 768 → 384; 192 < 256 stops


def test_pyramidal_tiff_rejects_bad_input_without_leaving_files(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        pyramid.write_pyramidal_tiff(tmp_path / "x.tiff", np.zeros((64, 64, 3), dtype=np.float32), mpp=0.5)
    with pytest.raises(ValueError, match="mpp"):
        pyramid.write_pyramidal_tiff(tmp_path / "x.tiff", np.zeros((64, 64, 3), dtype=np.uint8), mpp=-1)
    with pytest.raises(ValueError, match="tile"):
        pyramid.write_pyramidal_tiff(
            tmp_path / "x.tiff", np.zeros((64, 64, 3), dtype=np.uint8), mpp=0.5, tile=100
        )
    assert list(tmp_path.iterdir()) == []


def test_h5_round_trip_with_rows_and_attrs(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10, dtype=np.float32)
    names = np.array([f"t{i}" for i in range(10)])
    attrs = {"slide_id": "s1", "mpp": 0.5, "params": {"a": 1, "b": [1, 2]}, "none": None, "flag": True}
    path = hdf5.write_h5(tmp_path / "c.h5", {"images": images, "label": labels, "names": names}, attrs)
    with h5py.File(path) as h5:
        assert h5["images"].chunks == (1, 32, 32, 3)  # one tile per chunk
        assert h5["images"].compression is None and h5["label"].compression == "gzip"
    arrays, read_attrs = hdf5.read_h5(path)
    np.testing.assert_array_equal(arrays["images"], images)
    assert list(arrays["names"]) == list(names)
    assert read_attrs == attrs
    rows = [7, 2, 2, 9, 3, 4, 5, -1]  # any order, repeats, runs, negative
    subset, _ = hdf5.read_h5(path, keys=["images", "label"], rows=rows)
    np.testing.assert_array_equal(subset["images"], images[rows])
    np.testing.assert_array_equal(subset["label"], labels[rows])
    assert hdf5.h5_length(path, "images") == 10
    with pytest.raises(IndexError, match="out of range"):
        hdf5.read_h5(path, keys=["label"], rows=[10])
    gz = hdf5.write_h5(tmp_path / "gz.h5", {"images": images}, compression="gzip")
    np.testing.assert_array_equal(hdf5.read_h5(gz, rows=[3, 1])[0]["images"], images[[3, 1]])
    assert hdf5.read_h5_attrs(path)["params"] == {"a": 1, "b": [1, 2]}


def test_h5_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        hdf5.read_h5(tmp_path / "missing.h5")
    path = hdf5.write_h5(tmp_path / "c.h5", {"a": np.zeros(3)})
    with pytest.raises(KeyError, match="c.h5"):
        hdf5.read_h5(path, keys=["b"])


def test_h5_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError), hdf5.h5_writer(tmp_path / "x.h5", {"a": 1}) as h5:
        hdf5.create_h5_dataset(h5, "images", shape=(4, 8, 8, 3), dtype=np.uint8)
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
