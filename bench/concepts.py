"""Benchmark: nuclei concepts per second on 224-px patches at 0.5 µm/px, with 1 and 2 worker processes.

Run from the repository root: ``python bench/concepts.py [--tiles N]``. The patches are a fixed,
seeded set rendered by :func:`mtlutils.synthetic.render_patch` (all centers, tumour and normal), so the
numbers are comparable between runs. Times include starting the worker processes; the CPU time per
tile is printed too, since wall-clock rates drop on a machine shared with other work. The last line is
JSON: ``{"tiles_per_s_1": …, "tiles_per_s_2": …, "scaling": …}`` (targets on a 2-core laptop:
≥ 60 tiles/s with 2 workers, scaling ≥ 1.6).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers), in seconds."""
    try:
        import resource  # Unix only
    except ImportError:  # pragma: no cover - Windows: this process only
        return time.process_time()
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return math.nan


def fixed_patches(n: int, size_px: int = 224, mpp: float = 0.5) -> np.ndarray:
    """``n`` deterministic synthetic patches (N, size_px, size_px, 3) uint8; 8 distinct renders reused."""
    from mtlutils.synthetic import default_centers, render_patch

    centers = [c.name for c in default_centers()]
    distinct = [
        render_patch(centers[k % len(centers)], tumour=k % 2 == 0, size_px=size_px, mpp=mpp, seed=k)[0]
        for k in range(min(n, 32))
    ]
    return np.stack([distinct[k % len(distinct)] for k in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=960, help="patches per run (default 960)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count; the best is kept")
    args = parser.parse_args()
    os.environ.setdefault("MTLUTILS_QUIET", "1")
    from mtlutils.concepts import extract_concepts
    from mtlutils.core.runtime import set_threads

    set_threads(1)
    images = fixed_patches(args.tiles)
    extract_concepts(images[:4], 0.5, workers=1)  # warm up imports in this process
    rates = {}
    for workers in (1, 2):
        best, cpu_ms = 0.0, math.inf
        for _ in range(args.repeats):
            cpu_start = _cpu_seconds()
            start = time.perf_counter()
            table = extract_concepts(images, 0.5, workers=workers)
            elapsed = time.perf_counter() - start
            best = max(best, len(images) / elapsed)
            cpu_ms = min(cpu_ms, (_cpu_seconds() - cpu_start) / len(images) * 1000)
        rates[workers] = best
        print(
            f"workers={workers}: {best:.1f} tiles/s, {cpu_ms:.1f} ms CPU per tile (all processes), "
            f"load average {_load():.1f}, mean nuclei per tile {table['n_nuclei'].mean():.1f}",
            flush=True,
        )
    print(
        json.dumps(
            {
                "tiles_per_s_1": round(rates[1], 1),
                "tiles_per_s_2": round(rates[2], 1),
                "scaling": round(rates[2] / rates[1], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
