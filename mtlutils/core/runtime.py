"""Run-time settings: CPU threads, device choice and seeding.

On a 2-core laptop, several processes that each use every core make PyTorch many times slower, so
threads are always set deliberately: :func:`set_threads` in the main process, and ``threads=1`` in each
worker of a process pool.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def cpu_count() -> int:
    """Cores this process may use (honours CPU affinity where the OS exposes it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextmanager
def child_threads(n: int) -> Iterator[None]:
    """Inside the block, processes started (e.g. a spawn pool's workers) inherit ``n`` OpenMP/BLAS threads.

    Those libraries read the variables when the child imports them, before any pool initializer runs;
    start the workers (submit) inside the block. The parent's variables are restored on exit.
    """
    saved = {var: os.environ.get(var) for var in THREAD_VARS}
    os.environ.update(dict.fromkeys(THREAD_VARS, str(int(n))))
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def set_threads(n: int | None = None) -> int:
    """Set PyTorch intra-op threads and the OpenMP/BLAS variables to ``n`` (default: all cores).

    Set before NumPy/PyTorch start their thread pools (e.g. in a worker initializer) to take full effect.
    """
    n = int(n or cpu_count())
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    if "torch" in sys.modules:  # a later `import torch` reads OMP_NUM_THREADS; importing it here costs ~2 s
        sys.modules["torch"].set_num_threads(n)
    return n


def select_device(device: str = "auto") -> str:
    """Return ``"cuda"`` or ``"mps"`` when asked or, for ``"auto"``, when available; else ``"cpu"``."""
    import torch

    if device not in {"auto", "cpu", "cuda", "mps"} and not device.startswith("cuda:"):
        raise ValueError(f"DEVICE={device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={device!r} but no CUDA GPU is visible; use DEVICE='auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and PyTorch; return a fresh ``numpy.random.Generator`` for explicit use."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
    return np.random.default_rng(seed)


def environment(seed: int | None = None, device: str = "auto") -> dict[str, str | int | None]:
    """Versions, device and threads of this process: what a reader needs to reproduce a run."""
    import platform

    import torch

    from mtlutils import __version__

    return {
        "mtlutils": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": select_device(device),
        "torch_threads": torch.get_num_threads(),
        "cores": cpu_count(),
        "seed": seed,
    }


def print_env(seed: int | None = None, device: str = "auto") -> dict[str, str | int | None]:
    """Print :func:`environment` on one line (the first output of every notebook) and return it."""
    env = environment(seed, device)
    print(" · ".join(f"{k} {v}" for k, v in env.items()))
    return env
