"""Validation of a training: per-task losses, the weighted total, AUC / R^2 / accuracy, and a dry run."""

from __future__ import annotations

import numpy as np
import torch

from mtlutils.balancers import Balancer
from mtlutils.evaluation import metrics
from mtlutils.models import GuidedNet
from mtlutils.training.config import TrainConfig
from mtlutils.training.data import TrainingData
from mtlutils.training.inputs import to_float
from mtlutils.training.losses import task_losses
from mtlutils.training.predict import forward_all

METRIC_PREFIX = {"binary": "val_auc", "regression": "val_r2", "adversarial-class": "val_acc"}


def _task_metric(kind: str, y: np.ndarray, out: torch.Tensor) -> float:
    """AUC of a binary task, R^2 of a regression, accuracy of a class task (NaN without targets)."""
    if kind == "binary":
        keep = np.isfinite(y)
        ok = keep.any() and np.unique(y[keep]).size == 2
        return metrics.auc(y[keep], torch.sigmoid(out).numpy()[keep]) if ok else float("nan")
    if kind == "regression":
        return metrics.r2(y, out.numpy())
    keep = y >= 0
    return float((out.argmax(1).numpy()[keep] == y[keep]).mean()) if keep.any() else float("nan")


def evaluate(
    model: GuidedNet, balancer: Balancer, data: TrainingData, config: TrainConfig, device: str
) -> dict[str, float]:
    """Validation losses (unweighted per task, and weighted total), task metrics and the monitored value
    (``val_monitor``) on the validation rows of ``data``."""
    rows = torch.as_tensor(data.val_rows, device=data.images.device)
    outputs = forward_all(model, data.images[rows], config.eval_batch_size, device)
    outputs = {k: v.to(device) for k, v in outputs.items()}
    sub = {name: data.targets[name][rows].to(device) for name in data.tasks}
    with torch.no_grad():
        losses = task_losses(outputs, sub, data.tasks, data.binary_weights)
        row: dict[str, float] = {f"val_loss.{k}": float(v) for k, v in losses.items()}
        row["val_total"] = float(balancer.weighted_total(losses)) if losses else float("nan")
    for name, spec in data.tasks.items():
        value = _task_metric(spec.kind, sub[name].cpu().numpy(), outputs[name].cpu())
        row[f"{METRIC_PREFIX[spec.kind]}.{name}"] = value
    main_loss = row.get(f"val_loss.{data.main}", float("nan"))
    row["val_monitor"] = main_loss if config.monitor == "main" else row["val_total"]
    return row


def check_input_size(model: GuidedNet, images: torch.Tensor, device: str) -> None:
    """One dry forward pass, so a backbone that cannot take this patch size fails with a clear message."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(to_float(images[:2].to(device)))
    except RuntimeError as err:
        raise ValueError(
            f"backbone {model.config.backbone!r} cannot process {images.shape[2]}x{images.shape[3]} px patches "
            f"({str(err).splitlines()[0]}); use larger patches (inception_v3 needs >= 75 px) or another backbone"
        ) from err
    finally:
        model.train(was_training)
