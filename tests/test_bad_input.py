"""Bad input end to end: a manifest naming a missing file, corrupt slides inside a cohort, all slides bad."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlutils import data
from mtlutils.core import io as mio
from mtlutils.data import pyramid

MPP = 0.5
REPO = Path(__file__).resolve().parents[1]


def _pink(seed: int) -> np.ndarray:
    """A 448 x 448 all-tissue slide: 4 tiles of 224 px at 0.5 µm/px."""
    rng = np.random.default_rng(seed)
    return (np.array([215, 125, 180]) + rng.integers(-15, 16, (448, 448, 3))).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """good_a.tiff, good_c.tiff and a truncated copy of good_a (cut.tiff)."""
    folder = tmp_path_factory.mktemp("bad_input")
    pyramid.write_pyramidal_tiff(folder / "good_a.tiff", _pink(0), mpp=MPP)
    pyramid.write_pyramidal_tiff(folder / "good_c.tiff", _pink(1), mpp=MPP)
    raw = (folder / "good_a.tiff").read_bytes()
    (folder / "cut.tiff").write_bytes(raw[: len(raw) // 2])
    (folder / "notes.tiff").write_text("not a slide\n" * 50)
    return folder


def _manifest(folder: Path, paths: dict[str, str], name: str = "manifest.csv") -> Path:
    rows = [
        {"slide_id": sid, "patient_id": f"p_{sid}", "center": "A", "split": "train", "path": path}
        for sid, path in paths.items()
    ]
    target = folder / name
    pd.DataFrame(rows).to_csv(target, index=False)
    return target


def _outputs(folder: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


def test_manifest_missing_file_one_line_naming_it(slides, tmp_path):
    manifest = _manifest(tmp_path, {"a": str(slides / "good_a.tiff"), "b": str(tmp_path / "gone.tiff")})
    with pytest.raises(data.ManifestError) as info:
        data.tile_cohort(manifest, tmp_path / "out", show_progress=False)
    message = str(info.value)
    assert "\n" not in message and "gone.tiff" in message and "not found" in message
    assert "fix the path column" in message and not (tmp_path / "out").exists()


def test_cli_manifest_missing_file_exits_nonzero_without_output(slides, tmp_path):
    manifest = _manifest(tmp_path, {"a": str(slides / "good_a.tiff"), "b": "gone.tiff"})
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "mtlutils", "tile", "--manifest", str(manifest), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "MTLUTILS_QUIET": "1", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "gone.tiff" in lines[0] and "Traceback" not in proc.stderr
    assert _outputs(out) == [] and proc.stdout == ""


def test_corrupt_slide_in_the_middle_is_skipped_and_reported(slides, tmp_path):
    paths = {
        "a": str(slides / "good_a.tiff"),
        "b": str(slides / "cut.tiff"),
        "c": str(slides / "good_c.tiff"),
    }
    out = tmp_path / "patches"
    with pytest.warns(UserWarning, match=r"1 of 3 slide\(s\) skipped") as caught:
        index = data.tile_cohort(_manifest(tmp_path, paths), out, show_progress=False)
    warning = str(caught[0].message)
    assert "cut.tiff" in warning and "copy it again" in warning and "b:" in warning
    assert sorted(index["slide_id"].unique()) == ["a", "c"] and len(index) == 8
    assert set(index.attrs["skipped_slides"]) == {"b"} and "truncated" in index.attrs["skipped_slides"]["b"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["skipped_slides"] == index.attrs["skipped_slides"] and info["n_slides"] == 2
    assert not (out / "b.h5").exists() and not any(mio.is_temp_file(p) for p in out.rglob("*"))
    patches = data.load_patches(out)
    assert len(patches) == 8 and set(patches.meta["slide_id"]) == {"a", "c"}
    assert patches.images.shape == (8, 224, 224, 3)


def test_slide_failing_while_read_is_skipped(slides, tmp_path, monkeypatch):
    """A slide whose header opens but whose tiles cannot be read (OpenSlideError mid-read)."""
    import openslide

    real = data.cohort.iter_tile_blocks

    def failing(slide, plan):
        if "good_c" in str(slide.path):
            raise openslide.OpenSlideError("TIFFRGBAImageGet failed")
        yield from real(slide, plan)

    monkeypatch.setattr(data.cohort, "iter_tile_blocks", failing)
    paths = {"a": str(slides / "good_a.tiff"), "c": str(slides / "good_c.tiff")}
    out = tmp_path / "patches"
    with pytest.warns(UserWarning, match="good_c.tiff"):
        index = data.tile_cohort(_manifest(tmp_path, paths), out, show_progress=False)
    assert list(index.attrs["skipped_slides"]) == ["c"] and set(index["slide_id"]) == {"a"}
    assert not (out / "c.h5").exists() and not any(mio.is_temp_file(p) for p in out.rglob("*"))


def test_every_slide_bad_is_one_line_error(slides, tmp_path):
    paths = {"a": str(slides / "cut.tiff"), "b": str(slides / "notes.tiff"), "c": str(slides / "cut.tiff")}
    out = tmp_path / "patches"
    with pytest.raises(data.SlideError) as info:
        data.tile_cohort(_manifest(tmp_path, paths), out, show_progress=False)
    message = str(info.value)
    assert "\n" not in message and "none of the 3 slides" in message and "cut.tiff" in message
    assert not (out / "index.csv").exists() and not list(out.glob("*.h5"))


def test_missing_mpp_stops_the_cohort_before_tiling(slides, tmp_path):
    """No MPP is a configuration error (fix: --mpp-override): raised, not skipped."""
    pyramid.write_pyramidal_tiff(tmp_path / "nompp.tiff", _pink(2), mpp=None)
    paths = {"a": str(slides / "good_a.tiff"), "n": str(tmp_path / "nompp.tiff")}
    out = tmp_path / "patches"
    with pytest.raises(data.MissingMPPError, match="--mpp-override"):
        data.tile_cohort(_manifest(tmp_path, paths), out, show_progress=False)
    assert not list(out.glob("*.h5"))
