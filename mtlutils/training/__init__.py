"""Training the guided CNN on in-memory patches: masked multi-task losses, a balancer, early stopping.

Entry point::

    result = fit(images, {"tumour": y, "count": c, "center": k},
                 {"tumour": "binary", "count": "regression", "center": "adversarial-class"},
                 split,                                    # "train" / "val" / anything else (ignored)
                 model_config=ModelConfig(), config=TrainConfig(weighting="uncert"))
    result.history          # one row per epoch: losses, task weights, val AUC / R^2 / accuracy, lambda
    predict(result.model, test_images)["tumour"]            # probabilities

Design choices (all visible in :class:`TrainConfig`):
    * data stay in memory as uint8 tensors (N, 3, H, W), resized once by :func:`prepare_images`;
      batches are index slices (no Dataset/DataLoader), augmented with random flips/transposes;
    * the main binary task uses class-weighted BCE with "balanced" weights n / (2 n_c) from the
      *training* labels (same ratio as paper A's, mean weight 1 over the training set);
    * a missing target (NaN; class -1) is masked: its row contributes no loss and no gradient, and a task
      with no target in a batch is left out of that batch's loss dict (never multiplied by 0, never filled);
    * adversarial class tasks sit behind a gradient reversal layer whose strength follows
      ``config.reversal`` (constant, DANN ramp or two-phase);
    * early stopping on a validation loss (``monitor="main"``: the main task's unweighted loss, comparable
      across epochs, weightings and model IDs; ``"total"``: paper A's sum of weighted losses), best
      checkpoint (model and balancer) restored; with a two-phase schedule only epochs after the switch
      can be "best";
    * transductive auxiliary/adversarial losses on unlabeled patches (paper A's variant) only with
      ``transductive=True``: rows of the splits in ``unlabeled_splits`` join the training batches with
      their main-task label masked (their centers then become classes of the adversary too).

Many trainings (a results table: model IDs x weightings x seeds): :func:`fit_many` runs named
:class:`Job` s in worker processes. Threads: on a 2-core CPU one training with 2 threads takes ~0.8 s
per epoch of 2400 64-px patches, two 1-thread workers together do ~1.4x the work of that, and a
2-thread process slows ~10x as soon as anything else uses a core; so prefer 1-thread workers.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mtlutils.balancers import Balancer, make_balancer
from mtlutils.core.io import atomic_path
from mtlutils.core.progress import progress
from mtlutils.core.runtime import seed_everything, select_device
from mtlutils.evaluation import metrics
from mtlutils.models import GuidedNet, ModelConfig, ReversalSchedule, TaskSpec, main_task_name, parse_tasks


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults suit the small CNN on 48-64 px patches on a CPU; paper A used
    ``optimizer="sgd", lr=1e-4, batch_size=32, patience=5, monitor="total"`` with InceptionV3."""

    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "adamw"  # "adamw" or "sgd" (Nesterov momentum)
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4  # on weights of conv/linear layers only; never on biases, norms, balancer
    patience: int = 3
    monitor: str = "main"  # "main" or "total"
    weighting: str = "naive"
    gradient: str = "none"
    task_weights: Mapping[str, float] | None = None  # fixed lambdas of the naive weighting
    init_log_var: float = 0.0  # start of s = log sigma^2 for the uncertainty weighting
    balancer_lr: float | None = None  # learning rate of the balancer's parameters (None: same as lr)
    reversal: ReversalSchedule = field(default_factory=ReversalSchedule)
    augment: bool = True
    class_weighted: bool = True
    transductive: bool = False
    unlabeled_splits: tuple[str, ...] = ("test", "external")
    main_task: str | None = None
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 256
    progress_desc: str = "training"

    def __post_init__(self) -> None:
        if self.optimizer not in {"adamw", "sgd"}:
            raise ValueError(f"optimizer {self.optimizer!r} is not 'adamw' or 'sgd'")
        if self.monitor not in {"main", "total"}:
            raise ValueError(f"monitor {self.monitor!r} is not 'main' or 'total'")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must all be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.reversal.kind == "two-phase" and self.reversal.switch_epoch >= self.epochs:
            raise ValueError(
                f"two-phase reversal switches at epoch {self.reversal.switch_epoch} but training has only "
                f"{self.epochs} epochs; lower switch_epoch or raise epochs"
            )

    @classmethod
    def paper(cls, **changes) -> TrainConfig:
        """Paper A's optimisation: SGD lr 1e-4, Nesterov momentum 0.9, batch 32, early stopping on the total
        validation loss with patience 5, L2 0.01 (Keras adds 0.01 * sum w^2 to the loss: weight decay 0.02
        in SGD terms). Meant for the pretrained InceptionV3 at 224 px, not for the small CNN from scratch."""
        settings = dict(
            optimizer="sgd",
            lr=1e-4,
            momentum=0.9,
            batch_size=32,
            patience=5,
            monitor="total",
            weight_decay=0.02,
            epochs=100,
            augment=False,
        )
        settings.update(changes)
        return cls(**settings)


@dataclass
class FitResult:
    """A trained model and everything needed to report on it."""

    model: GuidedNet
    balancer: Balancer
    history: pd.DataFrame
    best_epoch: int
    classes: dict[str, list]
    class_weights: list[float] | None
    main_task: str
    config: TrainConfig
    seconds: float

    def predict(self, images: np.ndarray | torch.Tensor, **kwargs) -> dict[str, np.ndarray]:
        return predict(self.model, images, **kwargs)


# ------------------------------------------------------------------------------------------- data
def prepare_images(
    images: np.ndarray | torch.Tensor, size: int | None = None, chunk: int = 512
) -> torch.Tensor:
    """uint8 (N, H, W, 3) array -> uint8 tensor (N, 3, size, size), resized once (antialiased bilinear).

    Do this once in the data step: e.g. 224 px at 0.5 um/px -> 64 px at 1.75 um/px. Already
    channels-first uint8 tensors pass through (resized if ``size`` differs).
    """
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0-255), got {x.dtype}; convert with .astype('uint8')")
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        if x.shape[-1] != 3:
            raise ValueError(f"images must have 3 colour channels, got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    if size is None or (x.shape[2] == size and x.shape[3] == size):
        return x.contiguous()
    out = torch.empty((x.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = block.round().clamp_(0, 255).to(torch.uint8)
    return out


def class_weights(labels: np.ndarray | Sequence[float]) -> np.ndarray:
    """Balanced class weights [w0, w1] = n / (2 n_c) from 0/1 labels (NaN ignored)."""
    y = np.asarray(labels, dtype=float)
    y = y[np.isfinite(y)]
    counts = np.array([(y == 0).sum(), (y == 1).sum()], dtype=float)
    if y.size and not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"binary labels must be 0/1, got values {np.unique(y)[:5]}")
    if (counts == 0).any():
        raise ValueError(
            f"the training labels contain only one class (counts {counts.astype(int).tolist()}); both are needed"
        )
    return counts.sum() / (2.0 * counts)


def encode_targets(
    targets: Mapping[str, Sequence | np.ndarray],
    tasks: Mapping[str, TaskSpec],
    n_rows: int,
    class_rows: np.ndarray,
) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Targets by task name -> tensors (float with NaN for missing; class codes with -1 for missing or
    classes never seen in ``class_rows``). Returns (encoded, classes per class task)."""
    missing = set(tasks) - set(targets)
    if missing:
        raise ValueError(f"no targets for tasks {sorted(missing)}; targets were given for {sorted(targets)}")
    encoded: dict[str, torch.Tensor] = {}
    classes: dict[str, list] = {}
    for name, spec in tasks.items():
        values = np.asarray(targets[name])
        if values.shape[0] != n_rows:
            raise ValueError(f"target {name!r} has {values.shape[0]} values for {n_rows} images")
        if spec.kind == "adversarial-class":
            present = pd.notna(values)
            seen = sorted(
                {v.item() if isinstance(v, np.generic) else v for v in values[class_rows] if pd.notna(v)},
                key=str,
            )
            if len(seen) < 2:
                raise ValueError(
                    f"class task {name!r} has {len(seen)} class(es) in the training rows; it needs >= 2"
                )
            lookup = {v: i for i, v in enumerate(seen)}
            codes = np.array([lookup.get(v, -1) if ok else -1 for v, ok in zip(values, present, strict=True)])
            encoded[name] = torch.as_tensor(codes, dtype=torch.long)
            classes[name] = list(seen)
        else:
            try:
                as_float = values.astype(float)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"target {name!r} ({spec.kind}) must be numeric with NaN for missing"
                ) from err
            if spec.kind == "binary":
                finite = as_float[np.isfinite(as_float)]
                if not np.isin(finite, (0.0, 1.0)).all():
                    raise ValueError(f"binary target {name!r} must be 0/1 (NaN for missing)")
            encoded[name] = torch.as_tensor(as_float, dtype=torch.float32)
    return encoded, classes


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random dihedral transform per image (flips and, for square images, transposes)."""
    n = x.shape[0]
    flips = torch.rand((3, n), generator=generator) < 0.5
    flips = flips.to(x.device)
    x = torch.where(flips[0].view(-1, 1, 1, 1), x.flip(3), x)
    x = torch.where(flips[1].view(-1, 1, 1, 1), x.flip(2), x)
    if x.shape[2] == x.shape[3]:
        x = torch.where(flips[2].view(-1, 1, 1, 1), x.transpose(2, 3), x)
    return x


# ----------------------------------------------------------------------------------------- losses
def task_losses(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    tasks: Mapping[str, TaskSpec],
    binary_weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Masked per-task losses (mean over rows with a target). Tasks without any target are left out.

    binary: BCE with logits, optionally class-weighted (``binary_weights[name] = [w0, w1]``, sum of
    w_i l_i divided by the number of labelled rows); regression: MSE; adversarial-class: cross-entropy.
    Missing rows are removed *before* the loss, so they get exactly zero gradient.
    """
    losses: dict[str, torch.Tensor] = {}
    for name in sorted(tasks):
        kind = tasks[name].kind
        out, y = outputs[name], targets[name]
        mask = y >= 0 if kind == "adversarial-class" else torch.isfinite(y)
        if not bool(mask.any()):
            continue
        out, y = out[mask], y[mask]
        if kind == "binary":
            per_row = F.binary_cross_entropy_with_logits(out, y, reduction="none")
            if binary_weights is not None and name in binary_weights:
                w = binary_weights[name]
                per_row = per_row * torch.where(y > 0.5, w[1], w[0])
            losses[name] = per_row.mean()
        elif kind == "regression":
            losses[name] = F.mse_loss(out, y)
        else:
            losses[name] = F.cross_entropy(out, y)
    return losses


# ----------------------------------------------------------------------------------------- optimizer
def make_optimizer(model: torch.nn.Module, balancer: Balancer, config: TrainConfig) -> torch.optim.Optimizer:
    """Three parameter groups: decayed weights (conv/linear, ndim >= 2), undecayed biases/norms, and the
    balancer's parameters (uncertainty log-variances), never decayed. Frozen parameters are left out."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "group": "weights"},
        {"params": no_decay, "weight_decay": 0.0, "group": "biases_norms"},
    ]
    balancer_params = [p for p in balancer.parameters() if p.requires_grad]
    if balancer_params:
        group = {"params": balancer_params, "weight_decay": 0.0, "group": "balancer"}
        if config.balancer_lr is not None:
            group["lr"] = config.balancer_lr
        groups.append(group)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)


# ------------------------------------------------------------------------------------------- predict
def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


@torch.inference_mode()
def _forward_all(
    model: GuidedNet, images: torch.Tensor, batch_size: int, device: str, layers: Sequence[str] | None = None
):
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        x = _to_float(images[start : start + batch_size].to(device))
        out = model.features(x) if layers is not None else model(x)
        for key in layers if layers is not None else out:
            if key not in out:
                raise ValueError(f"layer {key!r} unknown; available: {list(out)}")
            chunks.setdefault(key, []).append(out[key].float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}


def _model_device(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).device)


def predict(
    model: GuidedNet,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Predictions per task: probabilities for binary tasks, values for regression, class probabilities
    (N, K) for class tasks (columns ordered as ``FitResult.classes[name]``). Images: uint8, already resized."""
    images = prepare_images(images)
    raw = _forward_all(model, images, batch_size, _model_device(model))
    out = {}
    for name, spec in model.tasks.items():
        value = raw[name]
        if spec.kind == "binary":
            value = torch.sigmoid(value)
        elif spec.kind == "adversarial-class":
            value = torch.softmax(value, dim=1)
        out[name] = value.numpy()
    return out


def embed(
    model: GuidedNet,
    images: np.ndarray | torch.Tensor,
    layers: Sequence[str] = ("backbone", "shared"),
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Activations of ``layers`` ("backbone" = pooled conv features, "dense1".., "shared") for probes/UMAP."""
    images = prepare_images(images)
    raw = _forward_all(model, images, batch_size, _model_device(model), layers=list(layers))
    return {k: v.numpy() for k, v in raw.items()}


# ------------------------------------------------------------------------------------------- fit
def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename over ``path`` (never a half-written file)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _evaluate(
    model, balancer, images, targets, rows, tasks, main, binary_weights, config, device
) -> dict[str, float]:
    """Validation losses (unweighted per task, and weighted total) and task metrics on ``rows``."""
    outputs = _forward_all(model, images[rows], config.eval_batch_size, device)
    outputs = {k: v.to(device) for k, v in outputs.items()}
    sub = {name: targets[name][rows].to(device) for name in tasks}
    with torch.no_grad():
        losses = task_losses(outputs, sub, tasks, binary_weights)
        row: dict[str, float] = {f"val_loss.{k}": float(v) for k, v in losses.items()}
        row["val_total"] = float(balancer.weighted_total(losses)) if losses else float("nan")
    for name, spec in tasks.items():
        y, out = sub[name].cpu().numpy(), outputs[name].cpu()
        if spec.kind == "binary":
            keep = np.isfinite(y)
            ok = keep.any() and np.unique(y[keep]).size == 2
            row[f"val_auc.{name}"] = (
                metrics.auc(y[keep], torch.sigmoid(out).numpy()[keep]) if ok else float("nan")
            )
        elif spec.kind == "regression":
            row[f"val_r2.{name}"] = metrics.r2(y, out.numpy())
        else:
            keep = y >= 0
            row[f"val_acc.{name}"] = (
                float((out.argmax(1).numpy()[keep] == y[keep]).mean()) if keep.any() else float("nan")
            )
    row["val_monitor"] = (
        row.get(f"val_loss.{main}", float("nan")) if config.monitor == "main" else row["val_total"]
    )
    return row


def _check_input_size(model: GuidedNet, images: torch.Tensor, device: str) -> None:
    """One dry forward pass, so a backbone that cannot take this patch size fails with a clear message."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(_to_float(images[:2].to(device)))
    except RuntimeError as err:
        raise ValueError(
            f"backbone {model.config.backbone!r} cannot process {images.shape[2]}x{images.shape[3]} px patches "
            f"({str(err).splitlines()[0]}); use larger patches (inception_v3 needs >= 75 px) or another backbone"
        ) from err
    finally:
        model.train(was_training)


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

    x = prepare_images(images)
    n = x.shape[0]
    split = np.asarray(split).astype(str)
    if split.shape[0] != n:
        raise ValueError(f"split has {split.shape[0]} entries for {n} images")
    train_rows = np.flatnonzero(split == "train")
    val_rows = np.flatnonzero(split == "val")
    if train_rows.size == 0 or val_rows.size == 0:
        raise ValueError(f"need rows with split 'train' and 'val'; found {sorted(set(split.tolist()))}")
    extra_rows = (
        np.flatnonzero(np.isin(split, config.unlabeled_splits)) if config.transductive else np.array([], int)
    )
    pool = np.concatenate([train_rows, extra_rows])

    encoded, classes = encode_targets(targets, specs, n, class_rows=pool)
    if extra_rows.size:  # transductive rows never carry a main-task label
        main_target = encoded[main].clone()
        main_target[torch.as_tensor(extra_rows)] = float("nan") if main_target.is_floating_point() else -1
        encoded[main] = main_target
    specs = {
        name: TaskSpec(name, s.kind, len(classes[name])) if s.kind == "adversarial-class" else s
        for name, s in specs.items()
    }
    binary_w: dict[str, torch.Tensor] = {}
    cw_main = None
    if config.class_weighted:
        for name, s in specs.items():
            if s.kind == "binary":
                w = class_weights(encoded[name][torch.as_tensor(train_rows)].numpy())
                binary_w[name] = torch.as_tensor(w, dtype=torch.float32, device=device)
                if name == main:
                    cw_main = w.tolist()

    seed_everything(config.seed)  # before the model is built: same seed, same initial weights
    model = GuidedNet(specs, model_config).to(device)
    weighting_options = {"weights": config.task_weights} if config.weighting in {"naive", "vanilla"} else {}
    if config.weighting in {"uncert", "uncertainty"}:
        weighting_options = {"init_log_var": config.init_log_var}
    balancer = make_balancer(config.weighting, config.gradient, specs, **weighting_options).to(device)
    optimizer = make_optimizer(model, balancer, config)
    generator = torch.Generator().manual_seed(config.seed)
    adversarial = {name for name, s in specs.items() if s.is_adversarial}
    shared = model.shared_parameters()

    _check_input_size(model, x, device)
    if device != "cpu":
        x = x.to(device)
    gpu_targets = {k: v.to(device) for k, v in encoded.items()}
    pool_t = torch.as_tensor(pool)
    n_batches = max(1, math.ceil(pool.size / config.batch_size))

    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, float]] = []
    best = {"value": math.inf, "epoch": -1, "model": None, "balancer": None}
    first_candidate = config.reversal.first_full_epoch()
    since_best = 0
    bar = progress(range(config.epochs), desc=config.progress_desc)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        order = pool_t[torch.randperm(pool.size, generator=generator)]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        total_sum = torch.zeros((), device=device)
        lambdas: list[float] = []
        for b in range(n_batches):
            lam = config.reversal(epoch + b / n_batches, config.epochs)
            model.set_reversal_strength(lam)
            lambdas.append(lam)
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            if idx.numel() < 2:  # a lone last row would break batch norm
                continue
            xb = _to_float(x[idx.to(x.device)])
            if config.augment:
                xb = augment_batch(xb, generator)
            idx_dev = idx.to(device)
            outputs = model(xb)
            losses = task_losses(outputs, {k: v[idx_dev] for k, v in gpu_targets.items()}, specs, binary_w)
            if not losses:
                continue
            optimizer.zero_grad(set_to_none=True)
            balancer.weighting.before_update(model=model, losses=losses)
            total, _ = balancer.backward(losses, shared, exclude=adversarial)
            optimizer.step()
            total_sum += total
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
                counts[k] = counts.get(k, 0) + 1
        mean_losses = {k: float(sums[k]) / counts[k] for k in sorted(sums)}  # one sync per epoch
        balancer.weighting.end_epoch(mean_losses)

        mean_lambda = float(np.mean(lambdas)) if lambdas else float("nan")
        row: dict[str, float] = {"epoch": epoch, "reversal_lambda": mean_lambda}  # mean over the epoch
        row.update({f"train_loss.{k}": v for k, v in mean_losses.items()})
        row["train_total"] = float(total_sum) / n_batches
        row.update(balancer.log_values())
        row.update(
            _evaluate(
                model,
                balancer,
                x,
                gpu_targets,
                torch.as_tensor(val_rows, device=x.device),
                specs,
                main,
                binary_w,
                config,
                device,
            )
        )
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = time.perf_counter() - t0

        value = row["val_monitor"]
        if epoch >= first_candidate and math.isfinite(value) and value < best["value"]:
            best.update(
                value=value,
                epoch=epoch,
                model=copy.deepcopy(model.state_dict()),
                balancer=copy.deepcopy(balancer.state_dict()),
            )
            since_best = 0
        elif epoch >= first_candidate:
            since_best += 1
        row["best_so_far"] = best["epoch"]
        rows.append(row)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(val=f"{value:.3f}", auc=f"{row.get(f'val_auc.{main}', float('nan')):.3f}")
        if run_path is not None:
            frame = pd.DataFrame(rows)
            _atomic_write(run_path / "history.csv", lambda p, frame=frame: frame.to_csv(p, index=False))
        if since_best >= config.patience:
            break

    if best["model"] is not None:
        model.load_state_dict(best["model"])
        balancer.load_state_dict(best["balancer"])
    model.set_reversal_strength(config.reversal(config.epochs, config.epochs))
    model.eval()
    history = pd.DataFrame(rows)
    history.attrs.update(best_epoch=best["epoch"], main_task=main)
    result = FitResult(
        model=model,
        balancer=balancer,
        history=history,
        best_epoch=int(best["epoch"]),
        classes=classes,
        class_weights=cw_main,
        main_task=main,
        config=config,
        seconds=time.perf_counter() - start_time,
    )
    if run_path is not None:
        save_run(result, run_path)
    return result


def save_run(result: FitResult, folder: str | Path) -> Path:
    """Write ``history.csv``, ``model.pt`` (state dict, configs, tasks, classes) and ``run.json`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / "history.csv", lambda p: result.history.to_csv(p, index=False))
    payload = {
        "model_state": result.model.state_dict(),
        "balancer_state": result.balancer.state_dict(),
        "model_config": asdict(result.model.config),
        "tasks": {name: asdict(spec) for name, spec in result.model.tasks.items()},
        "classes": result.classes,
    }
    _atomic_write(folder / "model.pt", lambda p: torch.save(payload, p))
    info = {
        "best_epoch": result.best_epoch,
        "main_task": result.main_task,
        "class_weights": result.class_weights,
        "classes": {k: [str(c) for c in v] for k, v in result.classes.items()},
        "seconds": round(result.seconds, 3),
        "balancer": result.balancer.name,
        "train_config": {
            k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v)
            for k, v in vars(result.config).items()
        },
        "model_config": asdict(result.model.config),
    }
    _atomic_write(folder / "run.json", lambda p: p.write_text(json.dumps(info, indent=1, default=str) + "\n"))
    return folder


def load_run(folder: str | Path, device: str = "cpu") -> tuple[GuidedNet, dict]:
    """Rebuild the model saved by :func:`save_run`; returns (model in eval mode, saved payload)."""
    path = Path(folder) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the folder given to fit(run_dir=...) or save_run()")
    payload = torch.load(path, map_location=device, weights_only=True)
    cfg = payload["model_config"]
    cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    cfg = replace(cfg, pretrained=None)  # the saved state dict already holds every weight
    specs = {name: TaskSpec(**spec) for name, spec in payload["tasks"].items()}
    model = GuidedNet(specs, cfg)
    model.load_state_dict(payload["model_state"])
    return model.to(device).eval(), payload


# ------------------------------------------------------------------------------------- many runs
@dataclass(frozen=True)
class Job:
    """One training of :func:`fit_many`: a ``name``, its ``tasks`` and configs; ``targets`` adds or
    replaces targets for this job only (e.g. a random concept for the sanity check)."""

    name: str
    tasks: Mapping[str, str | TaskSpec]
    config: TrainConfig = field(default_factory=TrainConfig)
    model_config: ModelConfig = field(default_factory=ModelConfig)
    targets: Mapping[str, np.ndarray] | None = None
    run_dir: str | None = None


_WORKER_DATA: dict = {}


def _init_fit_worker(images: torch.Tensor, targets: dict, split: np.ndarray, threads: int) -> None:
    """Process-pool initializer: ``threads`` torch threads, quiet bars, the shared data kept once."""
    import os

    from mtlutils.core.runtime import set_threads

    os.environ["MTLUTILS_QUIET"] = "1"
    set_threads(threads)
    _WORKER_DATA.update(images=images, targets=targets, split=split)


def _run_job(job: Job, images=None, targets=None, split=None) -> FitResult:
    images = _WORKER_DATA["images"] if images is None else images
    targets = _WORKER_DATA["targets"] if targets is None else targets
    split = _WORKER_DATA["split"] if split is None else split
    merged = {**targets, **(job.targets or {})}
    result = fit(
        images,
        merged,
        job.tasks,
        split,
        model_config=job.model_config,
        config=job.config,
        run_dir=job.run_dir,
    )
    result.model.cpu()
    result.balancer.cpu()
    return result


def fit_many(
    images: np.ndarray | torch.Tensor,
    targets: Mapping[str, Sequence | np.ndarray],
    split: Sequence[str] | np.ndarray,
    jobs: Sequence[Job],
    workers: int | None = None,
    threads_per_worker: int = 1,
    desc: str = "trainings",
) -> dict[str, FitResult]:
    """Run independent trainings on the same data, ``workers`` at a time (processes, ``spawn``), each
    with ``threads_per_worker`` torch threads; returns ``{job.name: FitResult}`` in job order.

    On a 2-core CPU, two 1-thread workers beat one 2-thread process for small CNNs (see
    ``bench/training.py``). ``workers=1`` runs in this process with its current thread setting.
    Default: one worker per core on CPU, 1 on a GPU.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from mtlutils.core.runtime import child_threads, cpu_count

    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"job names must be unique; duplicates in {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    if not jobs:
        return {}
    images = prepare_images(images)
    targets = {k: np.asarray(v) for k, v in targets.items()}
    split = np.asarray(split).astype(str)
    if workers is None:
        on_gpu = any(select_device(job.config.device) != "cpu" for job in jobs)
        workers = 1 if on_gpu else max(1, cpu_count() // max(1, threads_per_worker))
    workers = max(1, min(int(workers), len(jobs)))
    if workers == 1:
        return {job.name: _run_job(job, images, targets, split) for job in progress(jobs, desc=desc)}
    with child_threads(threads_per_worker):  # inherited before torch loads in the workers
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=mp.get_context("spawn"),
            initializer=_init_fit_worker,
            initargs=(images, targets, split, threads_per_worker),
        )
        futures = [pool.submit(_run_job, job) for job in jobs]
    with pool:
        results = [f.result() for f in progress(futures, desc=desc)]
    return dict(zip(names, results, strict=True))
