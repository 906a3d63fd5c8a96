"""Targets and losses: balanced class weights, target encoding with missing values, masked per-task losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mtlutils.models import TaskSpec


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
