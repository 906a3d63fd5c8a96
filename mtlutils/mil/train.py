"""Training of the bag model: the loop of :mod:`mtlutils.training.loop`, on padded batches of bags.

Same shape as the CNN loop: a seeded :class:`Session`, ``_train_step`` (losses -> ``zero_grad`` ->
``balancer.weighting.before_update`` -> ``balancer.backward`` -> ``optimizer.step``), ``train_epoch``
(then ``weighting.end_epoch`` with the epoch-mean losses), ``epoch_row`` (plus ``balancer.log_values()``
and validation), early stopping on the validation *classification* loss with the best checkpoint
restored. The learning-rate schedule (cosine) is stepped once per epoch. The regression target is
min-max scaled on the training split; a bag without a regression value drops that task for that bag.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from mtlutils.bags.readers import BagSet
from mtlutils.balancers import Balancer, make_balancer
from mtlutils.core.runtime import seed_everything, select_device
from mtlutils.evaluation.metrics import auc
from mtlutils.mil.model import BagTransformer, MILConfig, pad_bags
from mtlutils.models import TaskSpec, parse_tasks
from mtlutils.training.loop import EarlyStopping
from mtlutils.training.losses import task_losses
from mtlutils.training.optimizer import make_optimizer

MAIN, REGRESSION = "biomarker", "tme"


@dataclass(frozen=True)
class MILTrainConfig:
    """Training settings. Paper B: AdamW lr 1e-4, batch 1, 32 epochs, patience 7. CPU default: lr 1e-3
    with batches of 8 padded bags (a small model learns in few epochs; see notebook 04)."""

    weighting: str = "naive"
    gradient: str = "none"
    epochs: int = 32
    patience: int = 7
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 8
    seed: int = 0
    device: str = "cpu"
    optimizer: str = "adamw"  # read by mtlutils.training.make_optimizer
    momentum: float = 0.0
    balancer_lr: float | None = None
    init_log_var: float = 0.0
    progress_desc: str = ""


@dataclass
class ScaledTarget:
    """Min-max scaling of the regression target, fitted on the training split."""

    low: float
    high: float

    @classmethod
    def fit(cls, values: np.ndarray, what: str = "the regression target") -> ScaledTarget:
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        if v.size < 2 or v.max() == v.min():
            raise ValueError(
                f"{what} has {v.size} finite training values, all equal or too few; cannot min-max scale"
            )
        return cls(float(v.min()), float(v.max()))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, float) - self.low) / (self.high - self.low)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, float) * (self.high - self.low) + self.low


@dataclass
class Session:
    """What changes while training: model, balancer, optimizer, scheduler, batch RNGs and the data."""

    model: BagTransformer
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    aux_generator: torch.Generator  # the second ("validation") batch of Auto-Lambda, kept apart
    bags: BagSet
    targets: dict[str, torch.Tensor]
    train_rows: np.ndarray
    val_rows: np.ndarray
    config: MILTrainConfig
    device: str
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    shared: list[torch.nn.Parameter] = field(init=False)

    def __post_init__(self) -> None:
        self.shared = self.model.shared_parameters()

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        x, pad = pad_bags([self.bags.feats[i] for i in rows], self.device)
        idx = torch.as_tensor(rows, device=self.device)
        return x, pad, {k: v[idx] for k, v in self.targets.items()}


@dataclass
class BagFit:
    """A trained bag model and how it got there."""

    model: BagTransformer
    balancer: Balancer
    history: pd.DataFrame
    best_epoch: int
    scaler: ScaledTarget | None
    tasks: dict[str, TaskSpec]
    config: MILTrainConfig
    seconds: float


def bag_tasks(joint: bool) -> dict[str, TaskSpec]:
    """{biomarker: binary} for the baseline, plus {tme: regression} for the joint model."""
    return parse_tasks({MAIN: "binary", REGRESSION: "regression"} if joint else {MAIN: "binary"})


def _balancer(tasks: Mapping[str, TaskSpec], config: MILTrainConfig) -> Balancer:
    options = {"init_log_var": config.init_log_var} if config.weighting in {"uncert", "uncertainty"} else {}
    return make_balancer(config.weighting, config.gradient, tasks, seed=config.seed, **options)


def start_session(
    bags: BagSet,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    tasks: dict[str, TaskSpec],
    model_config: MILConfig,
    config: MILTrainConfig,
    scaler: ScaledTarget | None,
) -> Session:
    """Seeded model, balancer, optimizer (decayed weights, undecayed biases/norms and balancer
    parameters: :func:`mtlutils.training.make_optimizer`), per-epoch cosine schedule, batch RNGs."""
    device = select_device(config.device)
    seed_everything(config.seed)
    model = BagTransformer(bags.dim, tasks, model_config)
    model.set_normalisation(np.concatenate([bags.feats[i] for i in train_rows]))
    model = model.to(device)
    balancer = _balancer(tasks, config).to(device)
    optimizer = make_optimizer(model, balancer, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    targets = {MAIN: torch.as_tensor(bags.y, dtype=torch.float32, device=device)}
    if REGRESSION in tasks:
        targets[REGRESSION] = torch.as_tensor(scaler(bags.tme), dtype=torch.float32, device=device)
    gens = [torch.Generator().manual_seed(config.seed + k) for k in (0, 7919)]
    return Session(
        model,
        balancer,
        optimizer,
        scheduler,
        *gens,
        bags,
        targets,
        train_rows,
        val_rows,
        config,
        device,
        tasks,
    )


def _check_finite(s: Session, losses: Mapping[str, torch.Tensor], rows: np.ndarray) -> None:
    bad = sorted(k for k, v in losses.items() if not math.isfinite(float(v.detach())))
    if bad:
        patients = ", ".join(map(str, s.bags.patients[rows]))
        raise FloatingPointError(
            f"non-finite {bad} loss on the batch of patients {patients}; check their features for NaN/inf "
            "or lower the learning rate"
        )


def _train_step(s: Session, rows: np.ndarray) -> dict[str, torch.Tensor] | None:
    """One update on bags ``rows``; returns the task losses or None when no task has a target."""
    x, pad, targets = s.batch(rows)
    losses = task_losses(s.model(x, pad), targets, s.tasks)
    if not losses:
        return None
    _check_finite(s, losses, rows)
    aux = s.train_rows[torch.randperm(len(s.train_rows), generator=s.aux_generator)[: len(rows)].numpy()]

    def loss_fn(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        xa, pa, ta = s.batch(aux)
        return task_losses(module(xa, pa), ta, s.tasks)

    def train_loss_fn(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return task_losses(module(x, pad), targets, s.tasks)

    s.optimizer.zero_grad(set_to_none=True)
    s.balancer.weighting.before_update(
        model=s.model, losses=losses, optimizer=s.optimizer, loss_fn=loss_fn, train_loss_fn=train_loss_fn
    )
    s.balancer.backward(losses, s.shared)
    s.optimizer.step()
    return losses


def train_epoch(s: Session, epoch: int) -> dict[str, float]:
    """One pass over the training bags in a seeded order; the log row with the mean training losses."""
    s.model.train()
    order = s.train_rows[torch.randperm(len(s.train_rows), generator=s.generator).numpy()]
    bs = s.config.batch_size
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(order), bs):
        losses = _train_step(s, order[start : start + bs])
        for k, v in (losses or {}).items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
            counts[k] = counts.get(k, 0) + 1
    mean_losses = {k: sums[k] / counts[k] for k in sorted(sums)}
    s.balancer.weighting.end_epoch(mean_losses)
    s.scheduler.step()  # once per epoch (paper B's public code stepped it per batch)
    return {"epoch": epoch, **{f"train_loss.{k}": v for k, v in mean_losses.items()}}


@torch.no_grad()
def validate(s: Session) -> dict[str, float]:
    """Validation losses per task, the classification loss as ``val_monitor``, and the validation AUC."""
    s.model.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(s.val_rows), 32):
        rows = s.val_rows[start : start + 32]
        x, pad, _ = s.batch(rows)
        for k, v in s.model(x, pad).items():
            outs.setdefault(k, []).append(v)
    outputs = {k: torch.cat(v) for k, v in outs.items()}
    idx = torch.as_tensor(s.val_rows, device=s.device)
    losses = task_losses(outputs, {k: v[idx] for k, v in s.targets.items()}, s.tasks)
    row = {f"val_loss.{k}": float(v) for k, v in losses.items()}
    row["val_monitor"] = row.get(f"val_loss.{MAIN}", math.nan)
    row["val_auc"] = auc(s.bags.y[s.val_rows], torch.sigmoid(outputs[MAIN]).cpu().numpy())
    return row


def epoch_row(s: Session, epoch: int) -> dict[str, float]:
    """Train one epoch and validate: the row of the per-epoch log (losses, weights, cosines, lr)."""
    t0 = time.perf_counter()
    lr = s.optimizer.param_groups[0]["lr"]
    row = train_epoch(s, epoch)
    row.update(s.balancer.log_values())
    row.update(validate(s))
    row["lr"], row["seconds"] = lr, time.perf_counter() - t0
    return row


def fit_bags(
    bags: BagSet,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    joint: bool = True,
    model_config: MILConfig | None = None,
    config: MILTrainConfig | None = None,
) -> BagFit:
    """Train the bag model on bags ``train_rows``, early-stop on the classification loss of ``val_rows``."""
    config = config or MILTrainConfig()
    t0 = time.perf_counter()
    train_rows, val_rows = np.asarray(train_rows, int), np.asarray(val_rows, int)
    for name, rows in (("training", train_rows), ("validation", val_rows)):
        if np.unique(bags.y[rows]).size < 2:
            raise ValueError(
                f"the {name} split ({len(rows)} patients, e.g. {', '.join(map(str, bags.patients[rows][:3]))}) "
                "has one biomarker class only; use fewer folds or more patients"
            )
    bad = [str(bags.patients[i]) for i in np.r_[train_rows, val_rows] if not np.isfinite(bags.feats[i]).all()]
    if bad:
        raise FloatingPointError(
            f"patients {', '.join(bad[:8])} have non-finite (NaN/inf) tile features; re-encode them"
        )
    tasks = bag_tasks(joint)
    scaler = ScaledTarget.fit(bags.tme[train_rows], "the training split's TME score") if joint else None
    s = start_session(bags, train_rows, val_rows, tasks, model_config or MILConfig(), config, scaler)
    best = EarlyStopping(0, config.patience)
    rows: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        row = epoch_row(s, epoch)
        best.update(epoch, row["val_monitor"], s.model, s.balancer)
        row["best_so_far"] = best.epoch
        rows.append(row)
        if best.stop:
            break
    best.restore(s.model, s.balancer)
    s.model.eval()
    return BagFit(
        s.model,
        s.balancer,
        pd.DataFrame(rows),
        int(best.epoch),
        scaler,
        tasks,
        config,
        time.perf_counter() - t0,
    )


@torch.no_grad()
def predict_bags(
    fit: BagFit, bags: BagSet, batch_size: int = 32, attention: bool = False
) -> dict[str, object]:
    """Eval-mode predictions: ``prob`` (P(biomarker)), ``tme`` (in the target's units, NaN for the
    baseline), ``embedding`` ((n, d_model) [cls] token: the classification head's input) and, with
    ``attention``, ``attention``: one (n_tiles,) array of [cls] attention per bag."""
    model = fit.model.eval()
    device = next(model.parameters()).device
    probs, tme, emb, att = [], [], [], []
    for start in range(0, len(bags), batch_size):
        chunk = bags.feats[start : start + batch_size]
        x, pad = pad_bags(chunk, device)
        out, tokens, weights = model.embed(x, pad, attention=attention)
        probs.append(torch.sigmoid(out[MAIN]).cpu().numpy())
        tme.append(out[REGRESSION].cpu().numpy() if REGRESSION in out else np.full(len(chunk), np.nan))
        emb.append(tokens[MAIN].cpu().numpy())
        if attention:
            att += [weights[i, : len(b)].cpu().numpy() for i, b in enumerate(chunk)]
    result: dict[str, object] = {
        "prob": np.concatenate(probs),
        "tme": fit.scaler.inverse(np.concatenate(tme)) if fit.scaler else np.concatenate(tme),
        "embedding": np.concatenate(emb),
    }
    if attention:
        result["attention"] = att
    return result
