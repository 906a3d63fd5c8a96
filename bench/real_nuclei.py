"""Benchmark: nuclei segmentation against annotated real H&E nuclei (CoNSeP-style crops at 40x).

Run from the repository root: ``python bench/real_nuclei.py [--split held_out] [--synthetic N]``.
Reads ``../shared/data/consep-train`` (``images/NAME.jpg``, ``inst/NAME.npz``) relative to the
repository root, or ``--data``; exits 0 with a "skipped" line when the folder is absent. Crops are
split by source image (:func:`mtlutils.concepts.realdata.is_held_out`); the parameters were chosen
on the calibration part, so the held-out figures are the result. Targets: count Spearman ≥ 0.85,
median predicted/true count ratio within 0.8–1.2. ``--synthetic N`` also renders N synthetic patches
(224 px at 0.5 µm/px, all centers, tumour and normal) and prints the count Spearman with the
generator's nuclei table (target ≥ 0.93). The last line is JSON:
``{"spearman": …, "median_ratio": …, "n": …, "f1_iou50": …}`` (held-out unless ``--split``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_agreement(n: int, workers: int = 1) -> dict[str, float]:
    """Count Spearman and median ratio of ``segment_nuclei`` vs the generator on ``n`` rendered patches."""
    import numpy as np
    from scipy.stats import spearmanr

    from mtlutils.concepts import segment_nuclei
    from mtlutils.synthetic import default_centers, render_patch

    centers = [c.name for c in default_centers()]
    found, true = [], []
    for k in range(n):
        image, nuclei = render_patch(
            centers[k % len(centers)], tumour=(k // len(centers)) % 2 == 0, seed=1000 + k
        )
        side = image.shape[0]
        inside = nuclei["x_px"].between(0, side) & nuclei["y_px"].between(0, side)
        found.append(int(segment_nuclei(image, 0.5).max()))
        true.append(int(inside.sum()))
    found_a, true_a = np.asarray(found, float), np.asarray(true, float)
    ratio = found_a[true_a > 0] / true_a[true_a > 0]
    return {
        "spearman": float(spearmanr(found_a, true_a).statistic),
        "median_ratio": float(np.median(ratio)),
        "n": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="CoNSeP-style folder (default: ../shared/...)"
    )
    parser.add_argument("--split", choices=("held_out", "calibration", "all"), default="held_out")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--synthetic", type=int, default=0, help="also check N synthetic patches (e.g. 80)")
    args = parser.parse_args()
    os.environ.setdefault("MTLUTILS_QUIET", "1")
    from mtlutils.concepts import realdata
    from mtlutils.core.runtime import set_threads

    set_threads(1)
    root = args.data or realdata.default_real_nuclei_dir()
    if args.synthetic:
        print("synthetic", json.dumps(synthetic_agreement(args.synthetic)))
    if not (root / "images").is_dir():
        print(f"skipped: no annotated nuclei at {root.resolve()}")
        return
    start = time.perf_counter()
    results = {}
    for split in dict.fromkeys(("calibration", args.split)):
        table = realdata.score_real_nuclei(
            root, realdata.real_nuclei_names(root, split), workers=args.workers
        )
        results[split] = realdata.summarise_real_nuclei(table)
        print(split, json.dumps(results[split]))
    print(f"{time.perf_counter() - start:.1f} s")
    final = results[args.split]
    print(json.dumps({k: final[k] for k in ("spearman", "median_ratio", "n", "f1_iou50")}))


if __name__ == "__main__":
    main()
