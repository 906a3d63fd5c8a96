"""The training loop: :func:`fit` trains a :class:`GuidedNet` epoch by epoch, validates and early-stops."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mtlutils.balancers import Balancer, make_balancer
from mtlutils.core.progress import progress
from mtlutils.core.runtime import seed_everything, select_device
from mtlutils.models import GuidedNet, ModelConfig, TaskSpec, main_task_name, parse_tasks
from mtlutils.training.adversarial import (
    CONFUSION_SUFFIX,
    AdversaryApart,
    adversary_losses,
    adversary_steps,
    label_codes,
    reset_adversaries,
)
from mtlutils.training.checkpoint import save_run, write_history
from mtlutils.training.config import FitResult, TrainConfig
from mtlutils.training.data import TrainingData, prepare_data
from mtlutils.training.evaluate import check_input_size, evaluate
from mtlutils.training.inputs import augment_batch, to_float
from mtlutils.training.losses import task_losses
from mtlutils.training.optimizer import make_optimizer


@dataclass
class Session:
    """What changes while training: the model, its balancer and optimizer, the batch RNG."""

    model: GuidedNet
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    data: TrainingData
    config: TrainConfig
    device: str
    adversarial: set[str] = field(init=False)  # tasks of an adversary head
    exclude: set[str] = field(init=False)  # their terms, added after any gradient aggregation
    shared: list[torch.nn.Parameter] = field(init=False)  # what the gradient method acts on

    def __post_init__(self) -> None:
        self.adversarial = {name for name, s in self.data.tasks.items() if s.is_adversarial}
        self.exclude = self.adversarial | {n + CONFUSION_SUFFIX for n in self.adversarial}
        self.shared = self.model.shared_parameters()


@dataclass
class EarlyStopping:
    """Best validation value so far, its epoch and checkpoint; stops after ``patience`` epochs without one.

    Epochs before ``first_epoch`` (the reversal switch of a two-phase schedule) can never be best.
    """

    first_epoch: int
    patience: int
    value: float = math.inf
    epoch: int = -1
    model_state: dict | None = None
    balancer_state: dict | None = None
    since_best: int = 0

    def update(self, epoch: int, value: float, model: GuidedNet, balancer: Balancer) -> None:
        """Count epoch ``epoch`` with validation value ``value``; keep a copy of the state if it is best."""
        if epoch < self.first_epoch:
            return
        if math.isfinite(value) and value < self.value:
            self.value, self.epoch, self.since_best = value, epoch, 0
            self.model_state = copy.deepcopy(model.state_dict())
            self.balancer_state = copy.deepcopy(balancer.state_dict())
        else:
            self.since_best += 1

    @property
    def stop(self) -> bool:
        """True once ``patience`` candidate epochs in a row were not better."""
        return self.since_best >= self.patience

    def restore(self, model: GuidedNet, balancer: Balancer) -> None:
        """Load the best checkpoint into ``model`` and ``balancer`` (no-op when no epoch was a candidate)."""
        if self.model_state is not None:
            model.load_state_dict(self.model_state)
            balancer.load_state_dict(self.balancer_state)


# ------------------------------------------------------------------------------------------ set-up
def _balancer(tasks: Mapping[str, TaskSpec], config: TrainConfig) -> Balancer:
    """The balancer of ``config.weighting`` x ``config.gradient`` with the weighting's options; adversarial
    tasks (and their confusion terms) are weighted 1 outside it unless ``adversary_weighting="learned"``."""
    fixed = {n + CONFUSION_SUFFIX for n, s in tasks.items() if s.is_adversarial}
    if config.adversary_weighting == "fixed":
        fixed |= {n for n, s in tasks.items() if s.is_adversarial}
    inner_tasks = {n: s for n, s in tasks.items() if n not in fixed}
    options = {"weights": config.task_weights} if config.weighting in {"naive", "vanilla"} else {}
    if config.weighting in {"naive", "vanilla"} and config.task_weights:
        options = {"weights": {k: v for k, v in config.task_weights.items() if k in inner_tasks}}
    if config.weighting in {"uncert", "uncertainty"}:
        options = {"init_log_var": config.init_log_var}
    made = make_balancer(config.weighting, config.gradient, inner_tasks, seed=config.seed, **options)
    return Balancer(AdversaryApart(made.weighting, fixed, config.task_weights), made.gradient)


def start_session(data: TrainingData, model_config: ModelConfig, config: TrainConfig, device: str) -> Session:
    """Seeded model, balancer, optimizer and batch RNG; the data moved to ``device`` after a dry run."""
    seed_everything(config.seed)  # before the model is built: same seed, same initial weights
    model = GuidedNet(data.tasks, model_config).to(device)
    balancer = _balancer(data.tasks, config).to(device)
    optimizer = make_optimizer(model, balancer, config)
    generator = torch.Generator().manual_seed(config.seed)
    check_input_size(model, data.images, device)
    if device != "cpu":
        data.images = data.images.to(device)
    data.targets = {k: v.to(device) for k, v in data.targets.items()}
    return Session(model, balancer, optimizer, generator, data, config, device)


# ------------------------------------------------------------------------------------------ epochs
def _losses_on(
    s: Session, module: GuidedNet, xb: torch.Tensor, batch: dict[str, torch.Tensor], strength: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(shared features, task losses) of ``module`` on one batch: the one forward every step uses."""
    data = s.data
    condition = label_codes(batch[data.main]) if data.tasks[data.main].kind == "binary" else None
    shared = module.features(xb)["shared"]
    ordinary = {k: v for k, v in data.tasks.items() if not v.is_adversarial}
    losses = task_losses(module.head_outputs(shared, condition), batch, ordinary, data.binary_weights)
    if s.adversarial:
        losses.update(adversary_losses(module, shared, batch, condition, strength))
    return shared, losses


def _batch(s: Session, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images (float, augmented when configured) and targets of training rows ``idx``."""
    xb = to_float(s.data.images[idx.to(s.data.images.device)])
    if s.config.augment:
        xb = augment_batch(xb, s.generator)
    idx_dev = idx.to(s.device)
    return xb, {k: v[idx_dev] for k, v in s.data.targets.items()}


def _meta_loss_fn(s: Session, size: int, strength: float):
    """Auto-Lambda's second batch: ``module -> losses`` on another shuffled training batch, drawn lazily
    (only a weighting that calls it consumes random numbers)."""

    def losses(module: GuidedNet) -> dict[str, torch.Tensor]:
        rows = s.data.pool[torch.randint(s.data.pool.numel(), (size,), generator=s.generator)]
        xm, bm = _batch(s, rows)
        return _losses_on(s, module, xm, bm, strength)[1]

    return losses


def _train_step(
    s: Session, idx: torch.Tensor, strength: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """One update on rows ``idx`` (+ ``adversary_steps - 1`` head-only ones); returns (losses, weighted
    total) or None when no task has a target. ``strength``: lambda of the adversarial terms now."""
    xb, batch = _batch(s, idx)
    shared, losses = _losses_on(s, s.model, xb, batch, strength)
    if not losses:
        return None
    s.optimizer.zero_grad(set_to_none=True)
    s.balancer.weighting.before_update(
        model=s.model,
        losses=losses,
        optimizer=s.optimizer,
        loss_fn=_meta_loss_fn(s, idx.numel(), strength),
        train_loss_fn=lambda module: _losses_on(s, module, xb, batch, strength)[1],
    )
    total, _ = s.balancer.backward(losses, s.shared, exclude=s.exclude, features=shared)
    s.optimizer.step()
    if s.adversarial and s.config.adversary_steps > 1:
        condition = label_codes(batch[s.data.main]) if s.data.tasks[s.data.main].kind == "binary" else None
        adversary_steps(s.model, s.optimizer, shared, batch, condition, s.config.adversary_steps - 1)
    return losses, total


def train_epoch(s: Session, epoch: int) -> dict[str, float]:
    """One pass over the training rows in a seeded order; the row of the log with the training losses."""
    cfg, pool = s.config, s.data.pool
    s.model.train()
    if s.adversarial and cfg.adversary_reset_every and epoch > 0 and epoch % cfg.adversary_reset_every == 0:
        reset_adversaries(s.model, s.optimizer)
    order = pool[torch.randperm(pool.numel(), generator=s.generator)]
    n_batches = max(1, math.ceil(pool.numel() / cfg.batch_size))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    total_sum = torch.zeros((), device=s.device)
    lambdas: list[float] = []
    for b in range(n_batches):
        lam = cfg.reversal(epoch + b / n_batches, cfg.epochs)
        s.model.set_reversal_strength(lam)
        lambdas.append(lam)
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        if idx.numel() < 2:  # a lone last row would break batch norm
            continue
        step = _train_step(s, idx, lam)
        if step is None:
            continue
        losses, total = step
        total_sum += total
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.detach()
            counts[k] = counts.get(k, 0) + 1
    mean_losses = {k: float(sums[k]) / counts[k] for k in sorted(sums)}  # one sync per epoch
    s.balancer.weighting.end_epoch(mean_losses)
    row: dict[str, float] = {
        "epoch": epoch,
        "reversal_lambda": float(np.mean(lambdas)) if lambdas else math.nan,
    }
    row.update({f"train_loss.{k}": v for k, v in mean_losses.items()})
    row["train_total"] = float(total_sum) / n_batches
    return row


def epoch_row(s: Session, epoch: int) -> dict[str, float]:
    """Train one epoch and validate: the full row of the per-epoch log (without ``best_so_far``)."""
    t0 = time.perf_counter()
    row = train_epoch(s, epoch)
    row.update(s.balancer.log_values())
    row.update(evaluate(s.model, s.balancer, s.data, s.config, s.device))
    row["lr"] = s.optimizer.param_groups[0]["lr"]
    row["seconds"] = time.perf_counter() - t0
    return row


# --------------------------------------------------------------------------------------------- fit
def fit(
    images: np.ndarray | torch.Tensor,
    targets: Mapping[str, Sequence | np.ndarray],
    tasks: Mapping[str, str | TaskSpec],
    split: Sequence[str] | np.ndarray,
    *,
    model_config: ModelConfig | None = None,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
) -> FitResult:
    """Train a :class:`GuidedNet` with one head per task on rows ``split == "train"``, early-stop on
    ``split == "val"``. ``images``: uint8 (N, H, W, 3) or (N, 3, H, W), already resized (see
    :func:`prepare_images`); ``targets``: ``{task: (N,) values}``, NaN / None where missing.

    With ``run_dir`` the per-epoch log (``history.csv``) is rewritten atomically after every epoch, and
    ``model.pt`` + ``run.json`` are written at the end.
    """
    config = config or TrainConfig()
    model_config = model_config or ModelConfig()
    start_time = time.perf_counter()
    specs = parse_tasks(tasks)
    main = main_task_name(specs, config.main_task)
    device = select_device(config.device)
    data = prepare_data(images, targets, specs, main, split, config, device)
    s = start_session(data, model_config, config, device)
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, float]] = []
    # with an adversary, only epochs at the reversal's plateau may be restored (never one from the ramp)
    first = config.reversal.first_full_epoch(config.epochs) if s.adversarial else 0
    best = EarlyStopping(first, config.patience)
    bar = progress(range(config.epochs), desc=config.progress_desc)
    for epoch in bar:
        row = epoch_row(s, epoch)
        best.update(epoch, row["val_monitor"], s.model, s.balancer)
        row["best_so_far"] = best.epoch
        rows.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                val=f"{row['val_monitor']:.3f}", auc=f"{row.get(f'val_auc.{main}', math.nan):.3f}"
            )
        if run_path is not None:
            write_history(run_path, pd.DataFrame(rows))
        if best.stop:
            break
    result = _finish(s, best, rows, start_time)
    if run_path is not None:
        save_run(result, run_path)
    return result


def _finish(s: Session, best: EarlyStopping, rows: list[dict[str, float]], start_time: float) -> FitResult:
    """Restore the best checkpoint, set the final reversal strength and wrap everything in a FitResult."""
    best.restore(s.model, s.balancer)
    config = s.config
    s.model.set_reversal_strength(config.reversal(config.epochs, config.epochs))
    s.model.eval()
    history = pd.DataFrame(rows)
    history.attrs.update(best_epoch=best.epoch, main_task=s.data.main)
    return FitResult(
        model=s.model,
        balancer=s.balancer,
        history=history,
        best_epoch=int(best.epoch),
        classes=s.data.classes,
        class_weights=s.data.main_class_weights,
        main_task=s.data.main,
        config=config,
        seconds=time.perf_counter() - start_time,
    )
