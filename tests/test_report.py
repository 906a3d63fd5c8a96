"""``mtlutils report RUN_DIR``: one static, escaped HTML page of a run, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from mtlutils.core import cli, report
from mtlutils.core import io as mio


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A fake run folder: results.json, two tiny PNGs (one with a hostile name), one executed notebook."""
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(run / "figures" / "03_table2_auc.png")
    Image.fromarray(pixels).save(run / "figures" / "<script>alert(1).png")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(6 * 7)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", text="42\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny executed notebook"), cell]
    nbformat.write(nb, run / "01_first.ipynb")
    results = {
        "mode": "quick",
        "parameters": {"SEED": 3},
        "notebooks": {
            "01_first": {"seconds": 12.5, "status": "ok"},
            "02_second": {"seconds": 3.0, "status": "failed", "error": "boom <b>"},
        },
        "figures": {
            "01.n_slides": 24,
            "01.card": {"oracle_auc": 0.98765},
            "02.table": [{"id": 1, "auc": 0.5}],
            "02.name": "<script>x</script>",
        },
    }
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_report_page_has_tables_figures_and_notebook_links(run_dir: Path):
    path = report.write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert "quick" in page and "SEED = 3" in page
    assert "12.5" in page and "failed" in page and "boom &lt;b&gt;" in page
    assert 'id="numbers-01"' in page and 'id="numbers-02"' in page  # one table per notebook
    assert "n_slides" in page and ">24<" in page and "card.oracle_auc" in page and "0.9877" in page
    assert "table[1].auc" in page
    assert '<img src="figures/03_table2_auc.png"' in page  # the key figure, embedded by a relative link
    assert 'href="figures/%3Cscript%3Ealert%281%29.png"' in page  # the others linked
    assert '<a href="html/01_first.html">01_first</a>' in page
    rendered = (run_dir / "html" / "01_first.html").read_text()
    assert "Tiny executed notebook" in rendered and "42" in rendered
    assert "02_second" in page and 'href="html/02_second.html"' not in page  # no executed notebook


def test_report_escapes_every_text(run_dir: Path):
    page = report.write_report(run_dir).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)" in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_report_falls_back_to_all_figures(run_dir: Path):
    (run_dir / "figures" / "03_table2_auc.png").rename(run_dir / "figures" / "zz_other.png")
    page = report.write_report(run_dir).read_text()
    assert '<img src="figures/zz_other.png"' in page
    assert '<img src="figures/%3Cscript%3Ealert%281%29.png"' in page


def test_missing_results_is_a_one_line_error_without_output(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="results.json does not exist"):
        report.write_report(empty)
    for target in (empty, tmp_path / "nowhere"):
        assert cli.main(["report", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "results.json" in err[0]
    assert list(empty.iterdir()) == []
    (empty / "results.json").write_text("{not json")
    assert cli.main(["report", str(empty)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (empty / "report.html").exists()


def test_a_failure_while_writing_leaves_no_half_written_page(run_dir: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_number_tables", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_report(run_dir)
    assert not (run_dir / "report.html").exists()
    assert not [p for p in run_dir.rglob("*") if mio.is_temp_file(p)]


def test_cli_report_prints_the_page(run_dir: Path, capsys):
    assert cli.main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run_dir / 'report.html'}"
    assert (run_dir / "report.html").is_file()
