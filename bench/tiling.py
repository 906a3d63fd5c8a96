"""Benchmark: tiling with supertile reads vs. plain per-tile ``read_region`` calls.

Generates (or reuses) a small synthetic cohort, then, in the same run and on the same tiles:

* ``tiles_per_s``: :func:`mtlutils.data.tiling.tile_slide` end to end — open, tissue detection, labels from
  the annotation, block reads, cutting (tiles kept in memory);
* ``raw_tiles_per_s``: one ``openslide.OpenSlide.read_region`` per tile at the same level, location
  and size, converted to RGB arrays (no tissue detection at all: the baseline does strictly less);
* ``cohort_tiles_per_s``: :func:`mtlutils.data.cohort.tile_cohort` into a fresh folder (HDF5 cache and
  index included), and ``load_tiles_per_s``: :func:`mtlutils.data.patches.load_patches` of it;
* ``reinhard_ms`` / ``macenko_ms``: stain normalisation per tile.

Each timing is the median of ``--repeats`` passes after one warm-up pass (files in the OS cache);
ours and raw passes alternate. Rates use this process's CPU time (``time.process_time``: both
paths are single-threaded, so on an idle machine it equals wall time, and on a shared machine it is
not inflated by other processes); ``ratio_wall`` is the same ratio from wall-clock time.
The last line printed is a JSON object. Run from the repository root::

    .venv/bin/python bench/tiling.py            # target: ratio >= 0.8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=str(REPO / "runs" / "bench-tiling"), help="work folder (cohort + patches)"
    )
    parser.add_argument("--slides-per-center", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048, help="level-0 side of each synthetic slide (px)")
    parser.add_argument("--tile-mpp", type=float, default=0.5)
    parser.add_argument("--tile-px", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="threads for this process (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    os.environ.setdefault("MTLUTILS_QUIET", "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before NumPy loads its BLAS
    from mtlutils.core.runtime import set_threads

    set_threads(args.threads)

    import numpy as np
    import openslide

    from mtlutils import data
    from mtlutils.data import stain
    from mtlutils.data.annotations import read_asap_xml

    work = Path(args.out)
    cohort_dir = work / "cohort"
    try:
        from mtlutils.synthetic import generate_cohort
    except ImportError:  # pragma: no cover - the synthetic generator is part of the package
        generate_cohort = None
    if generate_cohort is None:
        raise SystemExit("mtlutils.synthetic.generate_cohort is missing; this benchmark needs it")
    t0 = time.perf_counter()
    generate_cohort(
        cohort_dir, slides_per_center=args.slides_per_center, size_px=args.size, show_progress=False
    )
    generate_s = time.perf_counter() - t0
    manifest = data.read_manifest(cohort_dir / "manifest.csv")

    def ours() -> tuple[int, dict[str, dict]]:
        plans = {}
        total = 0
        for row in manifest.itertuples():
            polygons = read_asap_xml(row.annotation) if row.annotation else None
            with data.open_slide(row.path) as slide:
                images, coords = data.tile_slide(
                    slide, tile_mpp=args.tile_mpp, tile_px=args.tile_px, tumour_polygons=polygons
                )
            total += len(images)
            plans[row.slide_id] = {"coords": coords, "first": images[0].copy() if len(images) else None}
        return total, plans

    def raw(plans: dict[str, dict]) -> int:
        total = 0
        for row in manifest.itertuples():
            coords = plans[row.slide_id]["coords"]
            level, read_px = coords.attrs["level"], coords.attrs["read_px"]
            handle = openslide.OpenSlide(row.path)
            for x, y in zip(coords["x_px"].to_numpy(), coords["y_px"].to_numpy(), strict=True):
                tile = np.asarray(handle.read_region((int(x), int(y)), level, (read_px, read_px)))[
                    ..., :3
                ].copy()
                total += 1
            plans[row.slide_id]["raw_last"] = tile
            handle.close()
        return total

    def timed(fn, *a):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn(*a)
        return value, time.process_time() - cpu, time.perf_counter() - wall

    (n_tiles, plans), _, _ = timed(ours)  # warm-up (and the plan used by the raw reads)
    raw(plans)
    ours_cpu, raw_cpu, ours_wall, raw_wall = [], [], [], []
    for _ in range(args.repeats):
        (n, plans_again), cpu, wall = timed(ours)
        ours_cpu.append(cpu)
        ours_wall.append(wall)
        n_raw, cpu, wall = timed(raw, plans)
        raw_cpu.append(cpu)
        raw_wall.append(wall)
    assert n == n_tiles == n_raw

    # same pixels? (first tile of each slide read both ways, at native resolution only)
    max_diff = 0
    if args.tile_px == plans[manifest.slide_id[0]]["coords"].attrs["read_px"]:
        for row in manifest.itertuples():
            coords = plans[row.slide_id]["coords"]
            with data.open_slide(row.path) as slide:
                x, y = int(coords["x_px"].iloc[0]), int(coords["y_px"].iloc[0])
                direct = slide.read_region((x, y), coords.attrs["level"], (args.tile_px, args.tile_px))
            max_diff = max(
                max_diff, int(np.abs(direct.astype(int) - plans_again[row.slide_id]["first"]).max())
            )

    patches = work / "patches"
    cohort_s = []
    for _ in range(args.repeats):
        shutil.rmtree(patches, ignore_errors=True)
        _, dt, _ = timed(
            lambda: data.tile_cohort(
                manifest, patches, tile_mpp=args.tile_mpp, tile_px=args.tile_px, show_progress=False
            )
        )
        cohort_s.append(dt)
    load_s = []
    for _ in range(args.repeats):
        loaded, dt, _ = timed(data.load_patches, patches)
        load_s.append(dt)

    sample = loaded.images[:: max(1, len(loaded) // 64)][:64]
    stain_ms = stain.time_normalizers(sample, target=sample[0])

    ours_med, raw_med = statistics.median(ours_cpu), statistics.median(raw_cpu)
    result = {
        "tiles_per_s": round(n_tiles / ours_med, 1),
        "raw_tiles_per_s": round(n_tiles / raw_med, 1),
        "ratio": round(raw_med / ours_med, 3),
        "ratio_wall": round(statistics.median(raw_wall) / statistics.median(ours_wall), 3),
        "cohort_tiles_per_s": round(n_tiles / statistics.median(cohort_s), 1),
        "load_tiles_per_s": round(len(loaded) / statistics.median(load_s), 1),
        "reinhard_ms": round(stain_ms["reinhard_ms_per_tile"], 2),
        "macenko_ms": round(stain_ms["macenko_ms_per_tile"], 2),
        "n_tiles": int(n_tiles),
        "n_slides": int(len(manifest)),
        "slide_px": args.size,
        "tile_mpp": args.tile_mpp,
        "tile_px": args.tile_px,
        "read_level": int(plans[manifest.slide_id[0]]["coords"].attrs["level"]),
        "max_pixel_diff_vs_raw": max_diff,
        "threads": args.threads,
        "repeats": args.repeats,
        "generate_s": round(generate_s, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
