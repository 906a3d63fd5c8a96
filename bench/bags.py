"""Speed of the bag Transformer: bags per second in padded batches vs one bag at a time, same outputs.

    .venv/bin/python bench/bags.py [--bags 256] [--tiles 8 48] [--dim 34] [--batch 32] [--threads 1] [--paper]

Bags are random features with 8–48 tiles each (speed does not depend on content). Eval-mode forward
passes of the default CPU model (``--paper``: paper B's 384-d, 2 + 2 layers) over all bags, one bag per
call and then in padded batches; a training step (forward + backward + AdamW) is timed the same way. The
last line is JSON: ``{"bags_per_s_bs1", "bags_per_s_batched", "ratio", "max_abs_diff"` (largest
difference between a bag's outputs padded and alone), "train_bags_per_s_bs1", "train_bags_per_s_batched",
"train_ratio", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("MTLUTILS_QUIET", "1")

from mtlutils.core.runtime import set_threads  # noqa: E402
from mtlutils.mil import PAPER_B, BagTransformer, MILConfig, pad_bags  # noqa: E402

TASKS = {"biomarker": "binary", "tme": "regression"}


def _forward(model, bags, batch: int) -> tuple[float, list[dict]]:
    import torch

    outs = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(bags), batch):
            out = model(*pad_bags(bags[start : start + batch]))
            outs += [{k: float(v[i]) for k, v in out.items()} for i in range(len(out["biomarker"]))]
    return len(bags) / (time.perf_counter() - t0), outs


def _train(model, bags, batch: int) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.rand(len(bags))
    model.train()
    t0 = time.perf_counter()
    for start in range(0, len(bags), batch):
        out = model(*pad_bags(bags[start : start + batch]))
        target = y[start : start + batch]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["biomarker"], target.round())
        loss = loss + torch.nn.functional.mse_loss(out["tme"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return len(bags) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bags", type=int, default=256)
    p.add_argument("--tiles", type=int, nargs=2, default=(8, 48))
    p.add_argument("--dim", type=int, default=34)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paper", action="store_true", help="paper B's model sizes")
    args = p.parse_args()
    set_threads(args.threads)
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bags = [
        rng.standard_normal((int(rng.integers(args.tiles[0], args.tiles[1] + 1)), args.dim)).astype(
            np.float32
        )
        for _ in range(args.bags)
    ]
    model = BagTransformer(args.dim, TASKS, PAPER_B if args.paper else MILConfig()).eval()
    _forward(model, bags[:8], 1)  # warm-up
    bs1, one = _forward(model, bags, 1)
    batched, many = _forward(model, bags, args.batch)
    diff = max(abs(a[k] - b[k]) for a, b in zip(one, many) for k in a)
    train1 = _train(model, bags, 1)
    trainb = _train(model, bags, args.batch)
    result = {
        "bags_per_s_bs1": round(bs1, 1),
        "bags_per_s_batched": round(batched, 1),
        "ratio": round(batched / bs1, 2),
        "max_abs_diff": float(f"{diff:.3g}"),
        "train_bags_per_s_bs1": round(train1, 1),
        "train_bags_per_s_batched": round(trainb, 1),
        "train_ratio": round(trainb / train1, 2),
        "batch": args.batch,
        "bags": args.bags,
        "tiles": list(args.tiles),
        "threads": args.threads,
        "model": "paper_b" if args.paper else "cpu_default",
    }
    print(
        f"forward: {bs1:.0f} bags/s one at a time, {batched:.0f} bags/s in batches of {args.batch}; "
        f"largest output difference {diff:.1e}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
