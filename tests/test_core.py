"""core: presets, show, runtime (threads, device, seed), parallel map, layout, record."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mtlutils.core import layout, parallel, presets, record, runtime, show


def _square(x: int) -> int:
    return x * x


def _threads_seen() -> tuple[str | None, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_preset_follows_mode_and_overrides():
    assert presets.preset("01", "quick")["slides"] == 3
    assert presets.preset("03", "default", seeds=None)["seeds"] == presets.PRESETS["03"]["default"]["seeds"]
    assert presets.preset("03", "default", seeds=7)["seeds"] == 7
    with pytest.raises(ValueError, match="no preset named"):
        presets.preset("03", "default", sedes=7)
    with pytest.raises(ValueError, match="MODE"):
        presets.preset("03", "fast")


def test_show_prints_the_source_outside_jupyter(capsys):
    text = show.show(_square)
    assert "return x * x" in text and "return x * x" in capsys.readouterr().out
    assert show.show(_square, lines=(1, 1)).strip() == "def _square(x: int) -> int:"
    with pytest.raises(ValueError, match="no source"):
        show.show(3)


def test_parallel_map_keeps_order_and_pins_worker_threads():
    tasks = [(i,) for i in range(7)]
    assert list(parallel.parallel_map(_square, tasks, workers=1)) == [i * i for i in range(7)]
    assert list(parallel.parallel_map(_square, tasks, workers=2, show_progress=False)) == [
        i * i for i in range(7)
    ]
    seen = list(parallel.parallel_map(_threads_seen, [()] * 2, workers=2, show_progress=False))
    assert all(omp == "1" and torch_threads == 1 for omp, torch_threads in seen)
    with pytest.raises(ValueError, match="workers=0"):
        list(parallel.parallel_map(_square, tasks, workers=0))
    with pytest.raises(ValueError, match="whole number"):
        parallel.check_workers(1.5)


def test_set_threads_and_child_threads_restore(monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "9")
    with runtime.child_threads(1):
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["OMP_NUM_THREADS"] == "9"
    before = torch.get_num_threads()
    try:
        assert runtime.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match=">= 1"):
        runtime.set_threads(-1)


def test_select_device_and_seed():
    assert runtime.select_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="not one of"):
        runtime.select_device("tpu")
    a = runtime.seed_everything(5).random(3)
    b = runtime.seed_everything(5).random(3)
    np.testing.assert_array_equal(a, b)
    import torch

    runtime.seed_everything(5)
    x = torch.rand(2)
    runtime.seed_everything(5)
    assert torch.equal(x, torch.rand(2))


def test_layout_dirs_by_mode(tmp_path):
    dirs = layout.cohort_dirs(tmp_path, "quick", "synthetic")
    control = layout.cohort_dirs(tmp_path, "quick", "synthetic", control=True)
    assert dirs.root != control.root and dirs.patches != control.patches
    assert layout.cohort_dirs(tmp_path, "default", "synthetic").root != dirs.root
    with pytest.raises(ValueError):
        layout.check_mode("QUICK!")


def test_record_merges_keys_into_the_figures_file(tmp_path, monkeypatch):
    path = tmp_path / "figures.json"
    monkeypatch.setenv(record.FIGURES_ENV, str(path))
    record.record("01.n", np.int64(3))
    record.record("01.auc", np.float32(0.5))
    record.record("01.by_center", {"A": np.array([1, 2])})
    assert json.loads(path.read_text()) == {"01.n": 3, "01.auc": 0.5, "01.by_center": {"A": [1, 2]}}
    assert not [p for p in tmp_path.iterdir() if p.name != "figures.json"]  # no temp file left behind


def test_summary_compare_flatten_and_readme_block(tmp_path):
    from mtlutils.core import summary

    a = {
        "mode": "default",
        "notebooks": {"01_x": {"seconds": 10.0, "status": "ok"}},
        "figures": {"01.n": 3, "03.table": [{"id": 1, "weighting": "vanilla", "auc": 0.8}], "01.name": "x"},
    }
    b = {"figures": {"01.n": 3, "03.table": [{"id": 1, "weighting": "vanilla", "auc": 0.85}], "01.new": 1.0}}
    assert summary.flatten(a["figures"])["03.table[1/vanilla].auc"] == 0.8
    table = summary.compare(a, b, atol=0.01).set_index("key")
    assert table.loc["03.table[1/vanilla].auc", "difference"] == pytest.approx(0.05)
    assert "01.n" not in table.index and {"01.name", "01.new"} <= set(table.index)
    assert summary.compare(a, b, atol=0.1).set_index("key").index.tolist() == ["01.name", "01.new"]
    block = summary.readme_block(a, "test machine")
    assert "| `01_x` | ok | 10 |" in block and "test machine" in block
    text = f"intro\n{summary.BLOCK_START}\nold\n{summary.BLOCK_END}\nrest\n"
    new = summary.replace_block(text, "new block")
    assert new == f"intro\n{summary.BLOCK_START}\nnew block\n{summary.BLOCK_END}\nrest\n"
    with pytest.raises(ValueError, match="markers"):
        summary.replace_block("no markers", "x")
    with pytest.raises(FileNotFoundError, match="run the tutorial first"):
        summary.load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        summary.load_results(tmp_path)


def test_compare_command_exit_codes(tmp_path, capsys):
    from mtlutils.core.cli import main

    for name, value in (("a", 0.5), ("b", 0.75)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"figures": {"03.auc": value}}))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "0.25" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_print_env_names_versions_device_threads_and_seed(capsys):
    import torch

    import mtlutils

    env = mtlutils.print_env(seed=3, device="cpu")
    line = capsys.readouterr().out.strip()
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["seed"] == 3
    assert env["torch_threads"] == torch.get_num_threads() and env["mtlutils"] == mtlutils.__version__
    assert "\n" not in line and "seed 3" in line and f"torch {torch.__version__}" in line


def test_key_figures_are_copied_and_shown_in_the_readme(tmp_path):
    """`mtlutils summary RUN --readme R --figures D`: the three key PNGs land in D and R links them."""
    from mtlutils.core import cli, summary

    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"mode": "quick", "notebooks": {}, "figures": {}}))
    readme = tmp_path / "README.md"
    readme.write_text(f"{summary.BLOCK_START}\n{summary.BLOCK_END}\n{summary.KEY_START}\n{summary.KEY_END}\n")
    args = ["summary", str(run), "--readme", str(readme), "--figures", str(tmp_path / "docs" / "figures")]
    assert cli.main(args) == 2  # no figures in the run yet: a one-line error, the README untouched
    assert summary.KEY_START + "\n" + summary.KEY_END in readme.read_text()
    for i, name in enumerate(summary.KEY_FIGURES):
        (run / "figures" / f"{name}.png").write_bytes(bytes([i]) * 10)
    assert cli.main(args) == 0
    text = readme.read_text()
    for i, name in enumerate(summary.KEY_FIGURES):
        assert (tmp_path / "docs" / "figures" / f"{name}.png").read_bytes() == bytes([i]) * 10
        assert f"](docs/figures/{name}.png)" in text
