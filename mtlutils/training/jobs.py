"""Many trainings on the same data: named :class:`Job` s run by :func:`fit_many` in worker processes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from mtlutils.core.parallel import parallel_map
from mtlutils.core.progress import progress
from mtlutils.core.runtime import cpu_count, select_device
from mtlutils.models import ModelConfig, TaskSpec
from mtlutils.training.config import FitResult, TrainConfig
from mtlutils.training.inputs import prepare_images
from mtlutils.training.loop import fit


@dataclass(frozen=True)
class Job:
    """One training of :func:`fit_many`: a ``name``, its ``tasks`` and configs; ``targets`` adds or
    replaces targets for this job only (e.g. a random concept for the sanity check)."""

    name: str
    tasks: Mapping[str, str | TaskSpec]
    config: TrainConfig = field(default_factory=TrainConfig)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    targets: Mapping[str, np.ndarray] | None = None
    run_dir: str | None = None


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The shared images as a tensor; a read-only (memory-mapped) array is copied once, for torch."""
    if isinstance(images, torch.Tensor):
        return images
    return torch.from_numpy(images if images.flags.writeable else np.array(images))


def _run_job(
    job: Job, images: np.ndarray | torch.Tensor, targets: dict, split: np.ndarray, in_worker: bool
) -> FitResult:
    """Train one job (in a worker process: with quiet progress bars); the result is moved to the CPU."""
    if in_worker:
        os.environ["MTLUTILS_QUIET"] = "1"
    merged = {**targets, **(job.targets or {})}
    result = fit(
        _as_tensor(images),
        merged,
        job.tasks,
        split,
        model_config=job.model_config,
        config=job.config,
        run_dir=job.run_dir,
    )
    result.model.cpu()
    result.balancer.cpu()
    return result


def _default_workers(jobs: Sequence[Job], threads_per_worker: int) -> int:
    """One worker per ``threads_per_worker`` cores on CPU, 1 when any job trains on a GPU."""
    on_gpu = any(select_device(job.config.device) != "cpu" for job in jobs)
    return 1 if on_gpu else max(1, cpu_count() // max(1, threads_per_worker))


def fit_many(
    images: np.ndarray | torch.Tensor,
    targets: Mapping[str, Sequence | np.ndarray],
    split: Sequence[str] | np.ndarray,
    jobs: Sequence[Job],
    workers: int | None = None,
    threads_per_worker: int = 1,
    desc: str = "trainings",
) -> dict[str, FitResult]:
    """Run independent trainings on the same data, ``workers`` at a time (processes), each with
    ``threads_per_worker`` torch threads; returns ``{job.name: FitResult}`` in job order.

    On a 2-core CPU, two 1-thread workers beat one 2-thread process for small CNNs (see
    ``bench/training.py``). ``workers=1`` runs in this process with its current thread setting.
    Default: one worker per core on CPU, 1 on a GPU. The images and targets are memory-mapped to the
    workers once (:func:`mtlutils.core.parallel.parallel_map`), not copied per job.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"job names must be unique; duplicates in {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    if not jobs:
        return {}
    images = prepare_images(images)
    targets = {k: np.asarray(v) for k, v in targets.items()}
    split = np.asarray(split).astype(str)
    workers = _default_workers(jobs, threads_per_worker) if workers is None else workers
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        return {job.name: _run_job(job, images, targets, split, False) for job in progress(jobs, desc=desc)}
    shared = images.numpy()  # NumPy, so joblib memory-maps it to the workers instead of pickling it
    tasks = [(job, shared, targets, split, True) for job in jobs]
    results = parallel_map(_run_job, tasks, workers=workers, desc=desc, threads_per_worker=threads_per_worker)
    return dict(zip(names, results, strict=True))
