"""Benchmark: wall seconds and peak memory of the whole tutorial, in quick and in default mode.

Run from the repository root: ``python bench/tutorial.py [--modes quick default] [--out DIR]
[--data-dir DIR]``. Each mode runs ``python -m mtlutils run --fresh`` in a subprocess (every notebook
executed, nothing resumed) into ``OUT/run_MODE`` with ``DATA_DIR`` = ``DATA/MODE`` (both in a temporary
folder by default, removed afterwards), so the generated data is made from scratch as a newcomer's
first run would.

Memory: ``peak_rss_mb`` is the largest resident set of any single process of the run, read with
``os.wait4`` on the runner subprocess. Its rusage covers the runner and all descendants it waited for,
and papermill's kernel manager waits for each kernel it shuts down, so the notebook kernels are counted
(checked: a notebook allocating 600 MB gives 634 MB, a notebook printing 1 gives 86 MB). It
is per mode, unlike ``RUSAGE_CHILDREN`` of this process, which would mix the modes. Worker processes
running at the same time are not summed by it, so psutil (an ipykernel dependency) also polls the
whole process tree twice a second and ``peak_tree_rss_mb`` (printed per mode) is the largest sum seen
(an upper bound: pages shared between forked workers are counted in each). Targets on the 2-core
machine: quick ≤ 300 s, default ≤ 1500 s, peak ≤ 4096 MB. The last line is JSON:
``{"quick_s": …, "default_s": …, "peak_rss_mb": …}`` (``null`` for a mode not run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODES = ("quick", "default", "full")
REPO = Path(__file__).resolve().parents[1]


def _tree_rss_mb(pid: int) -> float:
    """Summed RSS of process ``pid`` and its descendants, in MB (0 when psutil is missing or it ended)."""
    try:
        import psutil
    except ImportError:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_mode(mode: str, out: Path, data_dir: Path) -> dict[str, float | int]:
    """Run the tutorial once in ``mode``; return seconds, exit code and the two peak-memory figures."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mtlutils", "run", "--fresh", "--out", str(out / f"run_{mode}")]
    cmd += ([f"--{mode}"] if mode != "default" else []) + ["-p", "DATA_DIR", str(data_dir / mode)]
    log = out / f"run_{mode}.log"
    peak_tree = [0.0]
    start = time.perf_counter()
    with log.open("w") as stream:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env={**os.environ, "MTLUTILS_QUIET": "1"}
        )
        done = threading.Event()

        def poll() -> None:
            while not done.wait(0.5):
                peak_tree[0] = max(peak_tree[0], _tree_rss_mb(proc.pid))

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 1),
        "returncode": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "peak_tree_rss_mb": round(peak_tree[0], 1),
        "log": str(log),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["quick", "default"])
    parser.add_argument("--out", default=None, help="folder of the run folders and logs (default: temporary)")
    parser.add_argument(
        "--data-dir", default=None, help="DATA_DIR root, one sub-folder per mode (default: temporary)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tutorial-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "runs"
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        measured: dict[str, dict] = {}
        failed = False
        for mode in args.modes:
            info = run_mode(mode, out, data_dir)
            measured[mode] = info
            print(
                f"{mode:8s} {info['seconds']:8.1f} s  peak process {info['peak_rss_mb']:7.1f} MB  "
                f"peak tree {info['peak_tree_rss_mb']:7.1f} MB  exit {info['returncode']}",
                flush=True,
            )
            if info["returncode"] != 0:
                failed = True
                tail = Path(info["log"]).read_text().strip().splitlines()[-5:]
                print(f"{mode} run failed; last lines of its log:", *tail, sep="\n", file=sys.stderr)
                break
    peaks = [m["peak_rss_mb"] for m in measured.values()]
    print(
        json.dumps(
            {
                "quick_s": measured.get("quick", {}).get("seconds") if not failed else None,
                "default_s": measured.get("default", {}).get("seconds") if not failed else None,
                "peak_rss_mb": max(peaks) if peaks and not failed else None,
            }
        )
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
