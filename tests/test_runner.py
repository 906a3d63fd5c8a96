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


# --------------------------------------------------------------------------------------------------
# resuming: unchanged notebooks are skipped, changed ones and everything after them rerun
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def logged(tmp_path: Path) -> tuple[Path, Path]:
    """Two notebooks that append their number to ``ran.log`` (the side effect that shows execution);
    02 fails while the file ``fail`` exists."""
    d, log = tmp_path / "lognbs", tmp_path / "ran.log"
    d.mkdir()
    _notebook(
        d / "01_first.ipynb",
        f"open({str(log)!r}, 'a').write('01\\n')\nfrom mtlutils import record\nrecord('01.x_times_2', X * 2)",
    )
    _notebook(d / "02_second.ipynb", _second_body(log, "02.y"), params='MODE = "default"')
    return d, log


def _second_body(log: Path, key: str) -> str:
    flag = log.with_name("fail")
    return (
        f"import os\nif os.path.exists({str(flag)!r}):\n    raise RuntimeError('interrupted')\n"
        f"open({str(log)!r}, 'a').write('02\\n')\nfrom mtlutils import record\nrecord({key!r}, 1)"
    )


def _ran(log: Path) -> list[str]:
    """Notebooks executed since the last call (and forget them)."""
    lines = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def _run(nb_dir: Path, out: Path, **kwargs) -> dict:
    return runner.run_notebooks(mode="quick", out_dir=out, notebook_dir=nb_dir, show_progress=False, **kwargs)


def test_interrupted_run_resumes_at_the_failed_notebook(logged, tmp_path: Path, capsys):
    nb_dir, log = logged
    out = tmp_path / "run"
    (tmp_path / "fail").touch()
    with pytest.raises(runner.NotebookFailed, match="interrupted"):
        _run(nb_dir, out)
    assert _ran(log) == ["01"]
    (tmp_path / "fail").unlink()
    results = _run(nb_dir, out)
    assert _ran(log) == ["02"]  # 01 was not executed again
    assert results["notebooks"]["01_first"]["skipped"] is True
    assert "skipped" not in results["notebooks"]["02_second"]
    assert results["figures"] == {"01.x_times_2": 2, "02.y": 1}  # 01's figures kept from the first run
    assert json.loads((out / "results.json").read_text())["figures"] == results["figures"]
    runner.print_summary(results)
    lines = capsys.readouterr().out.splitlines()
    assert "skipped (unchanged" in lines[0] and "ok" in lines[1]
    again = _run(nb_dir, out)
    assert _ran(log) == [] and all(info["skipped"] for info in again["notebooks"].values())
    assert again["figures"] == results["figures"]


def test_parameter_or_mode_change_reruns(logged, tmp_path: Path):
    nb_dir, log = logged
    out = tmp_path / "run"
    _run(nb_dir, out, parameters={"X": 1})
    assert _ran(log) == ["01", "02"]
    _run(nb_dir, out, parameters={"X": 1})
    assert _ran(log) == []
    results = _run(nb_dir, out, parameters={"X": 5})
    assert _ran(log) == ["01", "02"]  # 02 does not declare X, but reruns after 01 reran
    assert results["figures"]["01.x_times_2"] == 10
    runner.run_notebooks(mode="default", out_dir=out, notebook_dir=nb_dir, show_progress=False)
    assert _ran(log) == ["01", "02"]


def test_code_change_reruns_it_and_everything_after(logged, tmp_path: Path, monkeypatch):
    nb_dir, log = logged
    out = tmp_path / "run"
    _run(nb_dir, out)
    assert _ran(log) == ["01", "02"]
    _notebook(nb_dir / "02_second.ipynb", _second_body(log, "02.z"), params='MODE = "default"')
    results = _run(nb_dir, out)
    assert _ran(log) == ["02"]
    assert results["figures"] == {"01.x_times_2": 2, "02.z": 1}  # the rerun notebook's old figures dropped
    _notebook(nb_dir / "01_first.ipynb", f"open({str(log)!r}, 'a').write('01\\n')")
    results = _run(nb_dir, out)
    assert _ran(log) == ["01", "02"]  # downstream: 02 is unchanged but reruns after 01
    assert results["figures"] == {"02.z": 1}
    monkeypatch.setattr(runner, "code_version", lambda: "edited-package")  # an edit of mtlutils
    _run(nb_dir, out)
    assert _ran(log) == ["01", "02"]


def test_fresh_and_a_missing_executed_notebook_rerun(logged, tmp_path: Path, capsys):
    nb_dir, log = logged
    out = tmp_path / "run"
    base = ["run", "--quick", "--notebooks", str(nb_dir), "--out", str(out)]
    assert cli.main(base) == 0 and _ran(log) == ["01", "02"]
    assert cli.main(base) == 0 and _ran(log) == []
    assert capsys.readouterr().out.count("skipped (unchanged") == 2
    assert cli.main([*base, "--fresh"]) == 0 and _ran(log) == ["01", "02"]
    (out / "02_second.ipynb").unlink()
    assert cli.main(base) == 0 and _ran(log) == ["02"]


def test_fingerprint_follows_cells_and_package_code(nb_dir: Path, tmp_path: Path):
    from mtlutils.core.provenance import code_version

    nb = nb_dir / "01_first.ipynb"
    first = runner.notebook_fingerprint(nb, "v1")
    assert runner.notebook_fingerprint(nb, "v1") == first != runner.notebook_fingerprint(nb, "v2")
    executed = nbformat.read(nb, as_version=4)
    executed.cells[2].outputs = [nbformat.v4.new_output("stream", text="hello")]  # outputs do not count
    nbformat.write(executed, nb)
    assert runner.notebook_fingerprint(nb, "v1") == first
    pkg = tmp_path / "pkg"  # the package part of the fingerprint: code_version() of the mtlutils sources
    pkg.mkdir()
    (pkg / "a.py").write_text("A = 1\n")
    version = code_version(pkg)
    (pkg / "a.py").write_text("A = 22\n")
    assert code_version(pkg) != version
    assert code_version() == code_version() and runner.notebook_fingerprint(nb) != first


def test_read_only_run_folder_is_a_one_line_error(nb_dir: Path, tmp_path: Path, monkeypatch, capsys):
    def denied(self, data):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_bytes", denied)  # running as root, chmod would not stop us
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"cannot write the run folder .*run.*not writable"):
        runner.run_notebooks(out_dir=out, notebook_dir=nb_dir, show_progress=False)
    assert cli.main(["run", "--notebooks", str(nb_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write the run folder") and "--out" in err[0]
    assert not (out / "results.json").exists()


def test_unknown_parameter_on_the_cli_lists_valid_names(nb_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--notebooks", str(nb_dir), "--out", str(out), "-p", "NOPE", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "-p NOPE: not a parameter" in err[0] and "(valid: MODE, X)" in err[0]
    assert not out.exists()
