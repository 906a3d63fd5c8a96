"""Speed of one guided-CNN training: all heads (tumour, 4 concepts, adversarial center), in-memory patches.

    .venv/bin/python bench/training.py [--n 3000] [--size 64] [--epochs 5] [--threads 2] [--backbone tiny_cnn]
    .venv/bin/python bench/training.py --parallel 2     # 2 trainings at once, 1 thread each (fit_many)

Patches are random textures (speed does not depend on content). 80 % of the N patches train and 20 %
validate every epoch, as in a real run. The last line is JSON:
``{"samples_per_s": training samples per second (forward + backward + step),
"seconds_per_epoch": wall time per epoch including validation, "threads": torch threads, ...}``.
With ``--parallel K`` K trainings run at once in K worker processes of ``--threads`` threads each and
``samples_per_s`` is the aggregate (the number that matters for a notebook of ~60 trainings).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("MTLUTILS_QUIET", "1")

from mtlutils.core.runtime import cpu_count, set_threads  # noqa: E402
from mtlutils.models import ModelConfig, count_parameters  # noqa: E402
from mtlutils.training import Job, TrainConfig, fit, fit_many  # noqa: E402

TASKS = {
    "tumour": "binary",
    "area": "regression",
    "count": "regression",
    "contrast": "regression",
    "correlation": "regression",
    "center": "adversarial-class",
}


def synthetic_inputs(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    label = rng.integers(0, 2, n).astype(float)
    targets = {name: rng.normal(size=n) for name, kind in TASKS.items() if kind == "regression"}
    targets["tumour"] = label
    targets["center"] = rng.choice(["A", "B", "C"], n)
    split = np.where(rng.random(n) < 0.8, "train", "val")
    return images, targets, split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=cpu_count())
    parser.add_argument("--backbone", default="tiny_cnn")
    parser.add_argument("--weighting", default="uncert")
    parser.add_argument("--parallel", type=int, default=1, help="trainings run at once (worker processes)")
    args = parser.parse_args()

    if args.parallel > 1:
        bench_parallel(args)
        return
    threads = set_threads(args.threads)
    images, targets, split = synthetic_inputs(args.n, args.size)
    model_config = ModelConfig(backbone=args.backbone)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.epochs,  # never stop early: time every epoch
        weighting=args.weighting,
        device="cpu",
    )
    t0 = time.perf_counter()
    result = fit(images, targets, TASKS, split, model_config=model_config, config=config)
    wall = time.perf_counter() - t0
    history = result.history
    n_train = int((split == "train").sum())
    epochs_run = len(history)
    steady = history["seconds"].iloc[1:] if epochs_run > 1 else history["seconds"]
    out = {
        "samples_per_s": round(n_train * epochs_run / wall, 1),
        "seconds_per_epoch": round(float(steady.mean()), 3),
        "first_epoch_s": round(float(history["seconds"].iloc[0]), 3),
        "total_s": round(wall, 2),
        "threads": threads,
        "n_train": n_train,
        "n_val": int((split == "val").sum()),
        "size_px": args.size,
        "epochs": epochs_run,
        "batch_size": args.batch_size,
        "backbone": args.backbone,
        "parameters": count_parameters(result.model),
    }
    print(json.dumps(out))


def bench_parallel(args: argparse.Namespace) -> None:
    """K trainings at once in K worker processes; aggregate throughput."""
    images, targets, split = synthetic_inputs(args.n, args.size)
    jobs = [
        Job(
            f"seed{k}",
            TASKS,
            TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                patience=args.epochs,
                weighting=args.weighting,
                seed=k,
                device="cpu",
            ),
            ModelConfig(backbone=args.backbone),
        )
        for k in range(args.parallel)
    ]
    t0 = time.perf_counter()
    runs = fit_many(images, targets, split, jobs, workers=args.parallel, threads_per_worker=args.threads)
    wall = time.perf_counter() - t0
    n_train = int((split == "train").sum())
    epochs = sum(len(r.history) for r in runs.values())
    fit_seconds = [r.seconds for r in runs.values()]
    steady = [float(r.history["seconds"].iloc[1:].mean()) for r in runs.values()]
    out = {
        "samples_per_s": round(n_train * epochs / wall, 1),
        "samples_per_s_excluding_worker_start": round(n_train * epochs / max(fit_seconds), 1),
        "seconds_per_epoch": round(float(np.mean(steady)), 3),
        "total_s": round(wall, 2),
        "threads": args.threads,
        "workers": args.parallel,
        "n_train": n_train,
        "size_px": args.size,
        "epochs": epochs,
        "backbone": args.backbone,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
