"""The papermill runner: order, parameters, results.json, failures, record()."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from mtlutils.core import cli, runner


def _notebook(path: Path, body: str, params: str = 'MODE = "default"\nX = 1') -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture()
def nb_dir(tmp_path: Path) -> Path:
    d = tmp_path / "nbs"
    d.mkdir()
    _notebook(
        d / "01_first.ipynb",
        "from mtlutils import record\nrecord('01.x_times_2', X * 2)\nrecord('01.mode', MODE)",
    )
    _notebook(
        d / "02_second.ipynb",
        "from mtlutils import record\nrecord('02.y', [1.5, float('nan')])",
        params='MODE = "default"',
    )
    return d


def test_runs_in_order_and_collects_figures(nb_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    results = runner.run_notebooks(
        mode="quick", out_dir=out, parameters={"X": 21}, notebook_dir=nb_dir, show_progress=False
    )
    assert list(results["notebooks"]) == ["01_first", "02_second"]
    assert all(v["status"] == "ok" and v["seconds"] > 0 for v in results["notebooks"].values())
    saved = json.loads((out / "results.json").read_text())
    assert saved["mode"] == "quick"
    assert saved["figures"] == {"01.x_times_2": 42, "01.mode": "quick", "02.y": [1.5, None]}
    assert (out / "01_first.ipynb").exists() and (out / "02_second.ipynb").exists()


def test_only_selects_by_number(nb_dir: Path, tmp_path: Path):
    results = runner.run_notebooks(
        mode="quick", only=["02"], out_dir=tmp_path / "r", notebook_dir=nb_dir, show_progress=False
    )
    assert list(results["notebooks"]) == ["02_second"]


def test_unknown_notebook_and_parameter_are_one_line_errors(nb_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="--only 07: no such notebook"):
        runner.run_notebooks(only=["07"], out_dir=tmp_path / "r", notebook_dir=nb_dir)
    with pytest.raises(ValueError, match="-p NOPE: not a parameter") as info:
        runner.run_notebooks(parameters={"NOPE": 1}, out_dir=tmp_path / "r", notebook_dir=nb_dir)
    assert "(valid: MODE, X)" in str(info.value)  # the test notebooks declare MODE and X
    with pytest.raises(ValueError, match="MODE='fast'"):
        runner.run_notebooks(mode="fast", out_dir=tmp_path / "r", notebook_dir=nb_dir)


def test_stops_at_first_failure_and_names_cell_and_exception(nb_dir: Path, tmp_path: Path):
    _notebook(nb_dir / "01_first.ipynb", "raise ZeroDivisionError('boom in cell')")
    out = tmp_path / "run"
    with pytest.raises(
        runner.NotebookFailed, match=r"01_first.ipynb failed in cell \[\d+\]: ZeroDivisionError: boom in cell"
    ):
        runner.run_notebooks(out_dir=out, notebook_dir=nb_dir, show_progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["notebooks"]["01_first"]["status"] == "failed"
    assert "02_second" not in saved["notebooks"]


def test_parse_value_types():
    assert runner.parse_value("3") == 3 and runner.parse_value("0.5") == 0.5
    assert runner.parse_value("true") is True and runner.parse_value("None") is None
    assert runner.parse_value("[1, 2]") == [1, 2] and runner.parse_value("../data") == "../data"
    with pytest.raises(ValueError, match="looks like JSON"):
        runner.parse_value("[1, 2")


def test_cli_run_exit_codes(nb_dir: Path, tmp_path: Path, capsys):
    base = ["run", "--notebooks", str(nb_dir)]
    assert cli.main([*base, "--quick", "--out", str(tmp_path / "ok"), "-p", "X", "2"]) == 0
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["figures"]["01.x_times_2"] == 4
    assert cli.main([*base, "--only", "99", "--out", str(tmp_path / "bad")]) == 2
    assert "no such notebook" in capsys.readouterr().err
    _notebook(nb_dir / "02_second.ipynb", "raise ValueError('bad')", params='MODE = "default"')
    assert cli.main([*base, "--quick", "--out", str(tmp_path / "fail")]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: 02_second.ipynb failed in cell") and "ValueError: bad" in last
