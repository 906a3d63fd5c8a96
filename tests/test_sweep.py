"""The balancer sweep: cached (method x fold x seed) jobs, resume, the Dask backend, the statistics, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mtlutils.core.cli import main
from mtlutils.core.hdf5 import write_h5
from mtlutils.core.io import atomic_write_json
from mtlutils.experiments import bag_protocol
from mtlutils.experiments.sweep import check_methods, paper_b_methods, run_sweep
from mtlutils.mil import MILTrainConfig

METHODS = ["naive/none", "uncert/pcgrad"]
FAST = MILTrainConfig(epochs=2, patience=2)


def write_fake_cohort(root, n_internal=20, n_external=8, d=6, seed=0):
    """A bag cohort on disk (the layout of build_bag_cohort) with a planted signal, without rendering."""
    rng = np.random.default_rng(seed)
    rows, slides = [], []
    (root / "features").mkdir(parents=True)
    for i in range(n_internal + n_external):
        cohort = "internal" if i < n_internal else "external"
        y = i % 2
        tme = float(np.clip(0.3 + 0.4 * y + 0.1 * rng.standard_normal(), 0, 1))
        pid = f"{'P' if cohort == 'internal' else 'X'}{i:03d}"
        rows.append(
            (pid, "A" if cohort == "internal" else "D", cohort, y, tme if cohort == "internal" else np.nan)
        )
        n = int(rng.integers(3, 8))
        x = rng.standard_normal((n, d)).astype(np.float32)
        x[:, 0] += 1.5 * y
        x[:, 1] += 3 * tme
        write_h5(
            root / "features" / f"{pid}-S1.h5",
            {"feats": x, "coords": np.zeros((n, 2))},
            {"extractor": "fake"},
        )
        slides.append((f"{pid}-S1", pid, n, f"{pid}-S1.h5"))
    pd.DataFrame(rows, columns=["patient_id", "center", "cohort", "biomarker", "tme_score"]).to_csv(
        root / "clinical.csv", index=False
    )
    pd.DataFrame(slides, columns=["slide_id", "patient_id", "n_tiles", "filename"]).to_csv(
        root / "slides.csv", index=False
    )
    atomic_write_json(root / "cohort.json", {"key": f"fake{seed}", "features": "features"})
    return root


@pytest.fixture(scope="module")
def bags_dir(tmp_path_factory):
    return write_fake_cohort(tmp_path_factory.mktemp("fake"))


def _metrics(sweep):
    return {(r["method"], r["fold"], r["seed"]): r["metrics"] for r in sweep.results}


def test_sweep_caches_and_resumes(bags_dir, tmp_path):
    first = run_sweep(bags_dir, METHODS, n_folds=2, out_dir=tmp_path, workers=1, train_config=FAST)
    assert first.computed == 6 and [r["method"] for r in first.results][:2] == ["baseline", "baseline"]
    jobs = sorted((tmp_path / "jobs").glob("*.json"))
    assert len(jobs) == 6 and len(list((tmp_path / "jobs").glob("*.npz"))) == 6
    removed = next(p for p in jobs if p.name.startswith("uncert+pcgrad-f1"))
    removed.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in jobs if p != removed}
    again = run_sweep(bags_dir, METHODS, n_folds=2, out_dir=tmp_path, workers=1, train_config=FAST)
    assert again.computed == 1 and removed.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "only the deleted job recomputed"
    _close(_metrics(again), _metrics(first))
    record = json.loads(removed.read_text())
    assert record["history"] and {"weight.tme", "cos.biomarker.tme"} <= set(record["history"][0])


def test_statistics_of_a_sweep(bags_dir, tmp_path):
    sweep = run_sweep(
        bags_dir, ["naive/none", "uncert/none"], n_folds=2, out_dir=tmp_path, workers=1, train_config=FAST
    )
    table = bag_protocol.method_table(sweep.results, sweep.y, sweep.y_ext, n_boot=50)
    assert list(table["method"]) == ["baseline", "naive/none", "uncert/none"]
    assert {"auroc", "auroc_sd", "auprc", "silhouette", "ext_auroc", "ext_auroc_ci", "pearson_r"} <= set(
        table.columns
    )
    paired = bag_protocol.paired_vs_baseline(sweep.results, sweep.y, sweep.y_ext, n_boot=50)
    assert set(paired["method"]) == {"naive/none", "uncert/none"} and paired["ext_p"].between(0, 1).all()
    fr = bag_protocol.friedman(sweep.results)
    assert 0 <= fr["p_value"] <= 1 and len(fr["mean_ranks"]) == 3 and fr["cd"] > 0


def test_methods_are_checked():
    assert len(paper_b_methods()) == 16 and check_methods(["naive/none"]) == ["baseline", "naive/none"]
    with pytest.raises(ValueError, match="'weighting/gradient'"):
        check_methods(["naive+none"])
    with pytest.raises(ValueError, match="'nope/none'"):
        check_methods(["nope/none"])


def test_same_results_on_a_dask_cluster(bags_dir, tmp_path):
    distributed = pytest.importorskip(
        "distributed", reason="install the [dask] extra to test the Dask backend"
    )
    from joblib import parallel_config

    local = run_sweep(
        bags_dir, ["naive/none"], n_folds=2, out_dir=tmp_path / "local", workers=2, train_config=FAST
    )
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster), parallel_config(backend="dask"):
            remote = run_sweep(
                bags_dir, ["naive/none"], n_folds=2, out_dir=tmp_path / "dask", workers=2, train_config=FAST
            )
    assert remote.computed == 4
    _close(_metrics(remote), _metrics(local))


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        for name, value in a[k].items():
            assert value == pytest.approx(b[k][name], abs=1e-6, nan_ok=True), (k, name)


def test_cli_sweep(bags_dir, tmp_path, capsys):
    code = main(
        [
            "sweep",
            "--bags",
            str(bags_dir),
            "--methods",
            "naive/none",
            "--folds",
            "2",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--workers",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "naive/none" in out and "4 job(s) trained" in out
    assert (tmp_path / "table.csv").is_file()
    assert main(["sweep", "--bags", str(bags_dir), "--methods", "bad", "--out", str(tmp_path)]) == 2
