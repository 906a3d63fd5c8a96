"""The command line: every bad input is one ``error: …`` line naming the file/value and the fix, a
non-zero exit status, and nothing that looks like finished output left behind; good inputs succeed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from mtlutils.core import cli, hdf5
from mtlutils.core import io as mio
from mtlutils.data import pyramid

MPP = 0.5
SIDE = 512  # tiny slides: 2 x 2 tiles of 224 px at 0.5 µm/px
MANIFEST_HEADER = "slide_id,patient_id,center,split,path"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _pink(tissue: bool = True, seed: int = 0) -> np.ndarray:
    """Near-white glass; with ``tissue`` a noisy pink block over the left three quarters."""
    rng = np.random.default_rng(seed)
    rgb = np.full((SIDE, SIDE, 3), 242) + rng.integers(-3, 4, (SIDE, SIDE, 3))
    if tissue:
        rgb[:, : SIDE * 3 // 4] = np.array([215, 125, 180]) + rng.integers(-15, 16, (SIDE, SIDE * 3 // 4, 3))
    return rgb.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory) -> Path:
    """Tiny slides: good, without MPP, all white, truncated, and a text file named .tiff."""
    folder = tmp_path_factory.mktemp("cli_slides")
    pyramid.write_pyramidal_tiff(folder / "good.tiff", _pink(), mpp=MPP)
    pyramid.write_pyramidal_tiff(folder / "nompp.tiff", _pink(), mpp=None)
    pyramid.write_pyramidal_tiff(folder / "blank.tiff", _pink(tissue=False), mpp=MPP)
    data = (folder / "good.tiff").read_bytes()
    (folder / "cut.tiff").write_bytes(data[: len(data) // 2])
    (folder / "notes.tiff").write_text("these are my notes, not a slide\n" * 40)
    return folder


def _manifest(folder: Path, rows: list[str], header: str = MANIFEST_HEADER, name: str = "m.csv") -> Path:
    """A manifest CSV in ``folder`` (rows are CSV lines; paths relative to ``folder``)."""
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _row(slide_id: str, path: str, split: str = "train") -> str:
    return f"{slide_id},P_{slide_id},A,{split},{path}"


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _finished_outputs(folder: Path) -> list[str]:
    """Files under ``folder`` that look like finished (or half-written) output."""
    if not folder.exists():
        return []
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and (
            path.suffix in (".h5", ".tiff", ".png", ".ipynb")
            or path.name in ("index.csv", "manifest.csv", "dataset.json", "cohort.json", "results.json")
            or mio.is_temp_file(path)
        ):
            found.append(str(path.relative_to(folder)))
    return found


def _assert_user_error(code: int, err: str, out_dir: Path | None, *must_name: str) -> str:
    """Exit 2, exactly one ``error: …`` line naming every ``must_name``, no output files left."""
    assert code == cli.EXIT_USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in must_name:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    if out_dir is not None:
        assert _finished_outputs(out_dir) == [], f"partial output left in {out_dir}"
    return lines[0]


# --------------------------------------------------------------------------------------------------
# tile: bad inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slide, must_name",
    [
        ("gone.tiff", ("gone.tiff", "not found", "fix the path column")),
        ("notes.tiff", ("notes.tiff", "not a whole-slide image", "check the file")),
        ("cut.tiff", ("cut.tiff", "truncated", "copy it again")),
        ("nompp.tiff", ("nompp.tiff", "MPP", "--mpp-override")),
        ("blank.tiff", ("blank.tiff", "no tissue", "lower tissue_threshold")),
    ],
)
def test_tile_bad_slides(slide_dir, tmp_path, capsys, slide, must_name):
    manifest = _manifest(tmp_path, [_row("s1", str(slide_dir / slide))])
    out = tmp_path / "patches"
    code, stdout, err = _cli(capsys, "tile", "--manifest", manifest, "--out", out)
    _assert_user_error(code, err, out, *must_name)
    assert stdout == ""


def test_tile_one_bad_slide_among_good_ones_is_skipped_and_reported(slide_dir, tmp_path, capsys):
    """A corrupt slide after a good one: the good one is tiled, the bad one skipped and named with its
    reason (a warning and dataset.json), and nothing half-written is left."""
    rows = [_row("a_good", str(slide_dir / "good.tiff")), _row("b_cut", str(slide_dir / "cut.tiff"))]
    out = tmp_path / "patches"
    with pytest.warns(UserWarning, match="cut.tiff"):
        code, stdout, err = _cli(capsys, "tile", "--manifest", _manifest(tmp_path, rows), "--out", out)
    assert code == 0, err
    index = pd.read_csv(out / "index.csv")
    assert set(index["slide_id"]) == {"a_good"} and len(index) > 0
    skipped = json.loads((out / "dataset.json").read_text())["skipped_slides"]
    assert list(skipped) == ["b_cut"] and "truncated" in skipped["b_cut"]
    assert not any(mio.is_temp_file(p) for p in out.rglob("*"))


def test_tile_without_mpp_succeeds_with_override(slide_dir, tmp_path, capsys):
    manifest = _manifest(tmp_path, [_row("s1", str(slide_dir / "nompp.tiff"))])
    out = tmp_path / "patches"
    code, stdout, err = _cli(
        capsys, "tile", "--manifest", manifest, "--out", out, "--mpp-override", "0.5", "--size", "224"
    )
    assert code == 0, err
    index = pd.read_csv(out / "index.csv")
    assert len(index) == 4 and (index["mpp"] == 0.5).all()  # 2 x 2 grid, 3/4 tissue -> all >= 0.5
    assert f"wrote {len(index)} patches from 1 slides" in stdout


@pytest.mark.parametrize(
    "header, rows, must_name",
    [
        ("slide_id,center,split,path", ["s1,A,train,{good}"], ("m.csv", "['patient_id']", "add them")),
        (MANIFEST_HEADER, [_row("dup", "{good}")] * 2, ("m.csv", "duplicate slide_id", "'dup'", "unique id")),
    ],
)
def test_tile_bad_manifest(slide_dir, tmp_path, capsys, header, rows, must_name):
    lines = [r.format(good=slide_dir / "good.tiff") for r in rows]
    manifest = _manifest(tmp_path, lines, header=header)
    out = tmp_path / "patches"
    code, _, err = _cli(capsys, "tile", "--manifest", manifest, "--out", out)
    _assert_user_error(code, err, out, *must_name)
    assert not out.exists()  # the manifest is checked before the output folder is made


def test_tile_missing_manifest(tmp_path, capsys):
    out = tmp_path / "patches"
    code, _, err = _cli(capsys, "tile", "--manifest", tmp_path / "nope.csv", "--out", out)
    _assert_user_error(code, err, out, "nope.csv", "does not exist", "give the path")
    assert not out.exists()


def test_tile_output_folder_under_a_file(slide_dir, tmp_path, capsys):
    manifest = _manifest(tmp_path, [_row("s1", str(slide_dir / "good.tiff"))])
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "patches"  # running as root, permissions would not stop us: a file in the way does
    code, _, err = _cli(capsys, "tile", "--manifest", manifest, "--out", out)
    _assert_user_error(code, err, None, str(out), "choose another output folder")
    assert blocker.read_text() == "x"


# --------------------------------------------------------------------------------------------------
# synth: bad inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, must_name",
    [
        (["--slides", "0"], ("=0", ">= 1", "use e.g. 8")),
        (["--size", "10"], ("=10", ">= 512", "at least 512 px")),
    ],
)
def test_synth_bad_values(tmp_path, capsys, args, must_name):
    out = tmp_path / "cohort"
    code, _, err = _cli(capsys, "synth", "--out", out, *args)
    _assert_user_error(code, err, out, *must_name)
    assert not out.exists()  # values are checked before anything is created


def test_synth_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, _, err = _cli(capsys, "synth", "--out", blocker / "cohort", "--slides", "1", "--size", "512")
    _assert_user_error(code, err, None, str(blocker / "cohort"), "choose another output folder")
    code, _, err = _cli(capsys, "synth", "--out", blocker, "--slides", "1", "--size", "512")
    _assert_user_error(code, err, None, str(blocker), "exists as a file")


# --------------------------------------------------------------------------------------------------
# run: bad inputs
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def nb_dir(tmp_path: Path) -> Path:
    """One tiny notebook with a parameters cell."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('MODE = "default"\nX = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("Y = X * 2")]
    nbformat.write(nb, folder / "01_tiny.ipynb")
    return folder


@pytest.mark.parametrize(
    "args, must_name",
    [
        (["--only", "99"], ("--only 99", "no such notebook")),
        (["-p", "NOPE", "1"], ("-p NOPE", "not a parameter", "(valid: MODE, X)", "parameters cell")),
    ],
)
def test_run_bad_selection(nb_dir, tmp_path, capsys, args, must_name):
    out = tmp_path / "run"
    code, _, err = _cli(capsys, "run", "--notebooks", nb_dir, "--out", out, *args)
    _assert_user_error(code, err, out, *must_name)
    assert not out.exists()  # checked before the run folder is made


# --------------------------------------------------------------------------------------------------
# good inputs
# --------------------------------------------------------------------------------------------------


def test_synth_then_tile(tmp_path, capsys):
    cohort = tmp_path / "cohort"
    code, stdout, err = _cli(capsys, "synth", "--out", cohort, "--slides", "1", "--size", "512")
    assert code == 0, err
    manifest = pd.read_csv(cohort / "manifest.csv")
    assert stdout.strip() == f"wrote {len(manifest)} slides to {cohort}"
    assert len(manifest) == 4 and set(manifest["center"]) == {"A", "B", "C", "D"}

    out = tmp_path / "patches"
    code, stdout, err = _cli(
        capsys, "tile", "--manifest", cohort / "manifest.csv", "--out", out, "--size", "64"
    )
    assert code == 0, err
    index = pd.read_csv(out / "index.csv")
    assert len(index) > 0 and set(index["slide_id"]) <= set(manifest["slide_id"])
    assert stdout.strip() == f"wrote {len(index)} patches from {index['slide_id'].nunique()} slides to {out}"
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(f"{s}.h5" for s in index["slide_id"].unique())
    assert not any(mio.is_temp_file(p) for p in out.rglob("*"))


def test_tile_real_slide_without_labels(real_slide, tmp_path, capsys):
    manifest = tmp_path / "real.csv"
    pd.DataFrame(
        [
            {
                "slide_id": "CMU-1-small",
                "patient_id": "P1",
                "center": "CMU",
                "split": "test",
                "path": str(real_slide),
                "annotation": "",
                "has_tumour": "",
            }
        ]
    ).to_csv(manifest, index=False)
    out = tmp_path / "patches"
    code, stdout, err = _cli(
        capsys, "tile", "--manifest", manifest, "--out", out, "--mpp", "0.5", "--max-tiles", "8"
    )
    assert code == 0, err
    index = pd.read_csv(out / "index.csv")
    assert 0 < len(index) <= 8 and index["label"].isna().all()  # no annotation, has_tumour unknown
    assert f"wrote {len(index)} patches from 1 slides" in stdout
    attrs = hdf5.read_h5_attrs(out / "CMU-1-small.h5")
    assert attrs["tile_mpp"] == pytest.approx(0.5) and attrs["tile_px"] == 224
    assert attrs["mpp"] == pytest.approx(0.499, abs=0.01)  # Aperio 20x metadata, used as is
    assert attrs["actual_tile_mpp"] == pytest.approx(0.5, rel=0.02)
    assert hdf5.h5_length(out / "CMU-1-small.h5", "images") == len(index)


# --------------------------------------------------------------------------------------------------
# the installed entry point
# --------------------------------------------------------------------------------------------------


def _entry_points() -> list[list[str]]:
    script = Path(sys.executable).with_name("mtlutils")
    return [[sys.executable, "-m", "mtlutils"]] + ([[str(script)]] if script.exists() else [])


@pytest.mark.parametrize("entry", _entry_points(), ids=lambda e: "python -m" if len(e) == 3 else "script")
def test_entry_point_reports_one_line_and_exit_code(entry, tmp_path):
    out = tmp_path / "patches"
    proc = subprocess.run(
        [*entry, "tile", "--manifest", str(tmp_path / "nope.csv"), "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "MTLUTILS_QUIET": "1"},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: manifest ") and "nope.csv" in lines[0]
    assert "does not exist" in lines[0]
    assert not out.exists()
