"""One parallel map for the whole package: joblib worker processes, one BLAS/torch thread each, results in order.

Every stage that fans work out over slides, patches or training jobs calls :func:`parallel_map`. It runs
in the calling process when ``workers`` is 1 (easy to debug, no start-up cost), and otherwise through
joblib's active backend: local ``loky`` processes by default, or a Dask cluster when the caller wraps
the call in ``joblib.parallel_config(backend="dask")`` (see the README's "Scale out").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar

from mtlutils.core.progress import progress
from mtlutils.core.runtime import set_threads

R = TypeVar("R")


def check_workers(workers: Any) -> int:
    """``workers`` as an int >= 1, or a ValueError naming the value."""
    try:
        value = int(workers)
    except (TypeError, ValueError):
        raise ValueError(f"workers={workers!r} must be a whole number >= 1") from None
    if value < 1 or value != workers:
        raise ValueError(f"workers={workers!r} must be a whole number >= 1")
    return value


def _call_with_threads(func: Callable[..., R], args: Sequence[Any], threads: int) -> R:
    """Run ``func(*args)`` in a worker after pinning its torch/BLAS threads."""
    set_threads(threads)
    return func(*args)


def _user_backend_active() -> bool:
    """True when the caller chose a joblib backend (e.g. Dask) with ``parallel_config``."""
    from joblib.parallel import _get_active_backend  # noqa: PLC2701 - joblib's own query of the active config

    backend, _ = _get_active_backend()
    return type(backend).__name__ != "LokyBackend"


def parallel_map(
    func: Callable[..., R],
    tasks: Iterable[Sequence[Any]],
    workers: int = 1,
    desc: str = "",
    threads_per_worker: int = 1,
    show_progress: bool = True,
) -> Iterator[R]:
    """Yield ``func(*task)`` for every task, in the tasks' order, with ``workers`` processes.

    ``func`` must be importable (a module-level function) when ``workers`` > 1. Each worker runs with
    ``threads_per_worker`` torch/BLAS threads, so ``workers * threads_per_worker`` should not exceed the
    cores. Large NumPy arguments are memory-mapped to the workers by joblib rather than copied per task.
    """
    tasks = [tuple(t) for t in tasks]
    workers = check_workers(workers)
    threads = check_workers(threads_per_worker)
    if workers == 1 or len(tasks) <= 1:
        results: Iterable[R] = (func(*t) for t in tasks)
        context: Any = nullcontext()
    else:
        from joblib import Parallel, delayed, parallel_config

        context = (
            nullcontext()
            if _user_backend_active()
            else parallel_config("loky", inner_max_num_threads=threads)
        )
        context.__enter__()
        results = Parallel(n_jobs=min(workers, len(tasks)), return_as="generator")(
            delayed(_call_with_threads)(func, t, threads) for t in tasks
        )
    try:
        with warnings.catch_warnings():
            # loky restarts workers that its idle timeout stopped between two maps; nothing is lost
            warnings.filterwarnings(
                "ignore", message="A worker stopped while some jobs", category=UserWarning
            )
            bar = progress(results, desc=desc, total=len(tasks)) if show_progress else results
            yield from bar
    finally:
        context.__exit__(None, None, None)
