"""Per-step time of every balancer relative to naive/none, on a small bag Transformer and notebook 03's CNN.

Usage: ``python bench/balancers.py [--steps 8] [--rounds 3] [--threads 2]``. The last line printed is a
JSON object: ``ratios`` (Transformer, weighting/gradient, "rep/<method>" = representation level at the
encoder output), ``vs_torchjd`` (our step time / torchjd 0.18's ``mtl_backward`` + ``jac_to_grad`` step
with the same aggregator), ``cnn_ratios`` (GuidedNet, tiny_cnn, 64 px, batch 64) and the plain step in ms.
Each configuration: the fastest of ``rounds`` x ``steps`` single steps, rounds interleaved across
configurations (robust to other processes sharing the CPU).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.nn import functional as F

from mtlutils.balancers import PAPER_B_GRADIENTS, PAPER_B_WEIGHTINGS, make_balancer
from mtlutils.models import GuidedNet, ModelConfig, parse_tasks

TASKS = parse_tasks({"tumour": "binary", "count": "regression"})


class BagTransformer(nn.Module):
    """Linear d -> 64, 2-layer Transformer encoder, 2 learnable query tokens (cross-attention), 2 heads."""

    def __init__(self, d_in: int = 768, width: int = 64) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(d_in, width), nn.ReLU())
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(1, 2, width) * 0.02)
        self.attend = nn.MultiheadAttention(width, 4, batch_first=True)
        self.heads = nn.ModuleDict({"tumour": nn.Linear(width, 1), "count": nn.Linear(width, 1)})

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("heads.")]

    def forward(self, bag: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        memory = self.encoder(self.project(bag))
        tokens, _ = self.attend(self.queries.expand(bag.shape[0], -1, -1), memory, memory)
        out = {
            "tumour": self.heads["tumour"](tokens[:, 0]).squeeze(1),
            "count": self.heads["count"](tokens[:, 1]).squeeze(1),
        }
        return out, memory, tokens


def bag_losses(out, y) -> dict[str, torch.Tensor]:
    return {
        "tumour": F.binary_cross_entropy_with_logits(out["tumour"], y["tumour"]),
        "count": F.mse_loss(out["count"], y["count"]),
    }


def transformer_case(n_tokens: int):
    torch.manual_seed(0)
    model = BagTransformer()
    data = [
        (torch.randn(1, n_tokens, 768), {"tumour": torch.ones(1), "count": torch.randn(1)}) for _ in range(2)
    ]

    def run(m, d):
        out, memory, tokens = m(d[0])
        return bag_losses(out, d[1]), memory, tokens

    return model, data, run


def cnn_case():
    torch.manual_seed(0)
    model = GuidedNet(TASKS, ModelConfig(backbone="tiny_cnn"))
    data = [
        (torch.rand(64, 3, 64, 64), {"tumour": (torch.rand(64) > 0.5).float(), "count": torch.randn(64)})
        for _ in range(2)
    ]

    def run(m, d):
        z = m.features(d[0])["shared"]
        out = {n: m.heads[n](z).squeeze(1) for n in TASKS}
        return bag_losses(out, d[1]), z, z

    return model, data, run


def our_step(model, data, run, weighting, gradient, level="parameter"):
    balancer = make_balancer(weighting, gradient, TASKS, level=level)
    opt = torch.optim.AdamW([*model.parameters(), *balancer.parameters()], lr=1e-4)
    shared = model.shared_parameters()
    wrap = lambda m: run(m, data[1])[0]  # noqa: E731
    train_fn = lambda m: run(m, data[0])[0]  # noqa: E731

    def step():
        losses, memory, _ = run(model, data[0])
        opt.zero_grad(set_to_none=True)
        balancer.weighting.before_update(
            model=model, losses=losses, optimizer=opt, loss_fn=wrap, train_loss_fn=train_fn
        )
        balancer.backward(losses, shared, features=memory)
        opt.step()

    return step


def torchjd_step(model, data, run, name):
    from torchjd import aggregation
    from torchjd.autojac import jac_to_grad, mtl_backward

    aggregator = {
        "pcgrad": aggregation.PCGrad,
        "cagrad": lambda: aggregation.CAGrad(c=0.4),
        "graddrop": aggregation.GradDrop,
        "upgrad": aggregation.UPGrad,
    }[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    shared = model.shared_parameters()
    heads = [list(model.heads[n].parameters()) for n in sorted(TASKS)]

    def step():
        losses, _, tokens = run(model, data[0])
        opt.zero_grad(set_to_none=True)
        feats = tokens if tokens.dim() == 3 else tokens  # the tensor the heads read
        mtl_backward(
            [losses[n] for n in sorted(TASKS)], features=feats, tasks_params=heads, shared_params=shared
        )
        jac_to_grad(shared, aggregator)
        opt.step()

    return step


def time_all(configs: dict, steps: int, rounds: int) -> dict[str, float]:
    """Fastest single step per configuration over ``rounds`` interleaved rounds of ``steps`` steps
    (the minimum is the estimate least disturbed by other processes on a shared machine)."""
    for step in configs.values():  # warm-up (allocations, solver set-up)
        for _ in range(2):
            step()
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for key, step in configs.items():
            for _ in range(steps):
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def configurations(case, with_torchjd: bool) -> dict:
    model, data, run = case
    configs = {
        f"{w}/{g}": our_step(model, data, run, w, g) for w in PAPER_B_WEIGHTINGS for g in PAPER_B_GRADIENTS
    }
    configs["naive/upgrad"] = our_step(model, data, run, "naive", "upgrad")
    for g in ("graddrop", "pcgrad", "cagrad"):
        configs[f"rep/{g}"] = our_step(model, data, run, "naive", g, level="representation")
    if with_torchjd:
        for g in ("pcgrad", "cagrad", "graddrop", "upgrad"):
            configs[f"torchjd/{g}"] = torchjd_step(model, data, run, g)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bag = time_all(configurations(transformer_case(args.tokens), True), args.steps, args.rounds)
    cnn = time_all(configurations(cnn_case(), False), args.steps, args.rounds)
    base, cnn_base = bag["naive/none"], cnn["naive/none"]
    ratios = {k: round(v / base, 3) for k, v in bag.items() if not k.startswith("torchjd/")}
    vs = {
        g: round(bag[f"naive/{g}"] / bag[f"torchjd/{g}"], 3)
        for g in ("pcgrad", "cagrad", "graddrop", "upgrad")
    }
    for key, value in ratios.items():
        print(f"transformer {key:18s} {value:6.3f}x")
    for key, value in cnn.items():
        print(f"cnn         {key:18s} {value / cnn_base:6.3f}x")
    result = {
        "ratios": ratios,
        "vs_torchjd": vs,
        "torchjd_ratios": {
            k.split("/")[1]: round(v / base, 3) for k, v in bag.items() if k.startswith("torchjd/")
        },
        "cnn_ratios": {k: round(v / cnn_base, 3) for k, v in cnn.items()},
        "plain_step_ms": {"transformer": round(1e3 * base, 2), "cnn": round(1e3 * cnn_base, 2)},
        "threads": args.threads,
        "tokens": args.tokens,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
