"""The balancer sweep on bags: (method x fold x seed) trainings through :func:`parallel_map`, each cached.

A job trains one bag model (``"baseline"``: the classification-only model; ``"<weighting>/<gradient>"``:
the joint model with that balancer), predicts its test fold and the external cohort, and writes
``jobs/<name>-<key>.npz`` (predictions, embeddings) then ``jobs/<name>-<key>.json`` (metrics, per-epoch
log): a job whose JSON exists with the same key (its parameters, the cohort and the folds) is read
back, not retrained, so an interrupted sweep resumes where it stopped. The key also holds the code
version of :data:`SWEEP_CODE` (training, models, balancers, metrics) and, through the cohort key, the
bag cohort's own code version: an edit to either retrains the jobs. Jobs run in worker processes
with one torch thread each; inside ``joblib.parallel_config(backend="dask")`` the same call runs on a
Dask cluster (``pip install mtlutils[dask]``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mtlutils.bags.readers import BagSet, load_bag_cohort
from mtlutils.core.io import atomic_path, atomic_write_json, ensure_writable_dir
from mtlutils.core.parallel import parallel_map
from mtlutils.core.provenance import code_version
from mtlutils.core.runtime import cpu_count
from mtlutils.evaluation.metrics import compute_metric
from mtlutils.evaluation.probes import silhouette
from mtlutils.experiments.bag_protocol import BASELINE, patient_folds, split_method
from mtlutils.mil import MILConfig, MILTrainConfig, fit_bags, predict_bags

ARRAYS = ("test_rows", "prob", "tme", "embedding", "ext_prob", "ext_tme", "ext_embedding")
#: relative cost of a job by weighting / gradient (orders the queue: long jobs first)
COST = {"autol": 3.0, "none": 1.0}
#: Root of the code that trains and scores a job: its :func:`code_version` with every mtlutils module it
#: imports is part of the job key.
SWEEP_CODE = ("mtlutils.experiments.sweep",)


def paper_b_methods() -> list[str]:
    """The 16 combinations of paper B: weighting {naive, uncert, dwa, autol} x gradient {none, graddrop,
    pcgrad, cagrad}, as offered by :func:`mtlutils.balancers.make_balancer`."""
    from mtlutils.balancers import PAPER_B_GRADIENTS, PAPER_B_WEIGHTINGS

    return [f"{w}/{g}" for w, g in itertools.product(PAPER_B_WEIGHTINGS, PAPER_B_GRADIENTS)]


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` with the baseline first; an unknown weighting or gradient is a one-line error."""
    from mtlutils.balancers import GRADIENT_METHODS, WEIGHTINGS

    out = [BASELINE] + [m for m in methods if m != BASELINE]
    for m in out[1:]:
        parts = m.split("/")
        if len(parts) != 2 or parts[0] not in WEIGHTINGS or parts[1] not in GRADIENT_METHODS:
            raise ValueError(
                f"method {m!r} is not 'weighting/gradient' with weighting in {sorted(WEIGHTINGS)} and "
                f"gradient in {sorted(GRADIENT_METHODS)} (or 'baseline')"
            )
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=2)
def _cohort(bags_dir: str, key: str = "") -> BagSet:
    """The cohort's bags, read once per process and cohort key (settings + encoder)."""
    return load_bag_cohort(bags_dir)


def cohort_key(bags_dir: str | Path) -> str:
    """The cohort's settings key with its encoder, the encoder's code hash and the cohort's code version."""
    info = json.loads((Path(bags_dir) / "cohort.json").read_text())
    return (
        f"{info['key']}|{info.get('encoder', '')}|{info.get('code_hash', '')}|{info.get('code_version', '')}"
    )


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _safe(method: str) -> str:
    return method.replace("/", "+")


def _metrics(y: np.ndarray, prob: np.ndarray, tme: np.ndarray, pred_tme: np.ndarray, emb: np.ndarray) -> dict:
    finite = np.isfinite(tme) & np.isfinite(pred_tme)
    r = (
        float(np.corrcoef(tme[finite], pred_tme[finite])[0, 1])
        if finite.sum() > 2 and np.std(pred_tme[finite]) > 0
        else math.nan
    )
    return {
        "auroc": float(compute_metric("auc", y, prob)[0]),
        "auprc": float(compute_metric("auprc", y, prob)[0]),
        "f1": float(compute_metric("f1", y, prob)[0]),
        "pearson_r": r,
        "silhouette": silhouette(emb, y.astype(int)),
    }


def run_job(
    bags_dir: str,
    method: str,
    fold: int,
    seed: int,
    folds: dict[str, list[int]],
    model_config: MILConfig,
    train_config: MILTrainConfig,
    job_dir: str,
    key: str,
) -> dict[str, Any]:
    """Train, predict and cache one (method, fold, seed) job; read it back when cached with ``key``."""
    stem = Path(job_dir) / f"{_safe(method)}-f{fold}-s{seed}-{key}"
    if stem.with_suffix(".json").is_file() and stem.with_suffix(".npz").is_file():
        return load_job(stem)
    bags = _cohort(bags_dir, cohort_key(bags_dir))
    internal, external = bags.where("internal"), bags.where("external")
    weighting, gradient = ("naive", "none") if method == BASELINE else split_method(method)
    config = replace(train_config, weighting=weighting, gradient=gradient, seed=seed)
    fit = fit_bags(
        internal,
        folds["train"],
        folds["val"],
        joint=method != BASELINE,
        model_config=model_config,
        config=config,
    )
    test = np.asarray(folds["test"], int)
    pred = predict_bags(fit, internal.subset(test))
    arrays = {"test_rows": test, "prob": pred["prob"], "tme": pred["tme"], "embedding": pred["embedding"]}
    metrics = _metrics(internal.y[test], pred["prob"], internal.tme[test], pred["tme"], pred["embedding"])
    if len(external):
        ext = predict_bags(fit, external)
        arrays.update(ext_prob=ext["prob"], ext_tme=ext["tme"], ext_embedding=ext["embedding"])
        metrics["ext_auroc"] = float(compute_metric("auc", external.y, ext["prob"])[0])
        metrics["ext_silhouette"] = silhouette(ext["embedding"], external.y.astype(int))
    with atomic_path(stem.with_suffix(".npz")) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    record = {
        "method": method,
        "fold": fold,
        "seed": seed,
        "key": key,
        "metrics": metrics,
        "best_epoch": fit.best_epoch,
        "seconds": fit.seconds,
        "history": fit.history.replace({np.nan: None}).to_dict(orient="records"),
    }
    atomic_write_json(stem.with_suffix(".json"), record)
    return {**record, **arrays}


def load_job(stem: str | Path) -> dict[str, Any]:
    """A cached job's record and arrays (``stem`` without suffix)."""
    stem = Path(stem)
    record = json.loads(stem.with_suffix(".json").read_text())
    with np.load(stem.with_suffix(".npz")) as npz:
        record.update({k: npz[k] for k in npz.files})
    return record


@dataclass
class Sweep:
    """Everything a sweep produced: the job results, the folds, the internal and external targets."""

    results: list[dict[str, Any]]
    folds: list[dict[str, np.ndarray]]
    y: np.ndarray
    y_ext: np.ndarray
    tme: np.ndarray
    patients: np.ndarray
    methods: list[str]
    computed: int  # jobs trained in this call (the others were read from the cache)

    def histories(self, fold: int = 0, seed: int | None = None):
        """Per-epoch logs of one fold (all methods), stacked, with a ``run`` column naming the method."""
        import pandas as pd

        parts = [
            pd.DataFrame(r["history"]).assign(run=r["method"])
            for r in self.results
            if r["fold"] == fold and (seed is None or r["seed"] == seed)
        ]
        return pd.concat(parts, ignore_index=True)


def run_sweep(
    bags_dir: str | Path,
    methods: Sequence[str] | None = None,
    n_folds: int = 5,
    seeds: Sequence[int] = (0,),
    out_dir: str | Path | None = None,
    workers: int | None = None,
    model_config: MILConfig | None = None,
    train_config: MILTrainConfig | None = None,
    fold_seed: int = 0,
) -> Sweep:
    """Run (or read back) every (method, fold, seed) job; the baseline is always included. Folds are
    patient-level, stratified, the same for every method (:func:`patient_folds` with ``fold_seed``)."""
    bags_dir = str(Path(bags_dir).resolve())
    methods = check_methods(paper_b_methods() if methods is None else methods)
    ckey = cohort_key(bags_dir)
    bags = _cohort(bags_dir, ckey)
    internal, external = bags.where("internal"), bags.where("external")
    folds = patient_folds(internal.y, n_folds, fold_seed, patients=internal.patients)
    model_config, train_config = model_config or MILConfig(), train_config or MILTrainConfig()
    job_dir = ensure_writable_dir(Path(out_dir or Path(bags_dir) / "sweep") / "jobs")
    code = code_version(*SWEEP_CODE, follow_imports=True)
    tasks, names = [], []
    for method, fold, seed in itertools.product(methods, range(n_folds), seeds):
        part = {k: v.tolist() for k, v in folds[fold].items()}
        cfg = replace(train_config, progress_desc="")
        key = _key(
            {
                "cohort": ckey,
                "method": method,
                "fold": part,
                "seed": seed,
                "model": asdict(model_config),
                "train": asdict(cfg),
                "code_version": code,
                "v": 1,
            }
        )
        tasks.append((bags_dir, method, fold, seed, part, model_config, cfg, str(job_dir), key))
        names.append(job_dir / f"{_safe(method)}-f{fold}-s{seed}-{key}.json")
    cached = sum(p.is_file() for p in names)
    order = sorted(range(len(tasks)), key=lambda i: -sum(COST.get(x, 2.0) for x in split_method(tasks[i][1])))
    n_workers = workers or cpu_count()
    done = list(parallel_map(run_job, [tasks[i] for i in order], workers=n_workers, desc="sweep"))
    results: list[dict[str, Any]] = [{}] * len(tasks)
    for i, r in zip(order, done):
        results[i] = r
    return Sweep(
        results, folds, internal.y, external.y, internal.tme, internal.patients, methods, len(tasks) - cached
    )
