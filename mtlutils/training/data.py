"""The inputs of one training, checked and encoded: images, targets by task, train/val rows, class weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mtlutils.models import TaskSpec
from mtlutils.training.config import TrainConfig
from mtlutils.training.inputs import prepare_images
from mtlutils.training.losses import class_weights, encode_targets


@dataclass
class TrainingData:
    """The inputs of one training, encoded: images, targets by task, rows that train and validate."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    targets: dict[str, torch.Tensor]  # float with NaN / class codes with -1 where missing
    tasks: dict[str, TaskSpec]  # class tasks with their n_classes
    main: str
    classes: dict[str, list]
    pool: torch.Tensor  # rows that train: "train" (+ transductive rows)
    val_rows: np.ndarray
    binary_weights: dict[str, torch.Tensor]  # [w0, w1] per binary task (empty when unweighted)
    main_class_weights: list[float] | None


def _split_rows(split: Sequence[str] | np.ndarray, n: int, config: TrainConfig) -> tuple[np.ndarray, ...]:
    """(train rows, val rows, transductive rows) of ``split``."""
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
    return train_rows, val_rows, extra_rows


def _binary_weights(
    tasks: Mapping[str, TaskSpec],
    encoded: Mapping[str, torch.Tensor],
    train_rows: np.ndarray,
    main: str,
    device: str,
) -> tuple[dict[str, torch.Tensor], list[float] | None]:
    """Balanced class weights of every binary task (from the training rows) and the main task's as a list."""
    weights: dict[str, torch.Tensor] = {}
    main_weights = None
    for name, spec in tasks.items():
        if spec.kind == "binary":
            w = class_weights(encoded[name][torch.as_tensor(train_rows)].numpy())
            weights[name] = torch.as_tensor(w, dtype=torch.float32, device=device)
            if name == main:
                main_weights = w.tolist()
    return weights, main_weights


def prepare_data(
    images: np.ndarray | torch.Tensor,
    targets: Mapping[str, Sequence | np.ndarray],
    tasks: dict[str, TaskSpec],
    main: str,
    split: Sequence[str] | np.ndarray,
    config: TrainConfig,
    device: str,
) -> TrainingData:
    """Check and encode the inputs of :func:`fit` (images stay on the CPU here)."""
    x = prepare_images(images)
    train_rows, val_rows, extra_rows = _split_rows(split, x.shape[0], config)
    pool = np.concatenate([train_rows, extra_rows])
    encoded, classes = encode_targets(targets, tasks, x.shape[0], class_rows=pool)
    if extra_rows.size:  # transductive rows never carry a main-task label
        main_target = encoded[main].clone()
        main_target[torch.as_tensor(extra_rows)] = float("nan") if main_target.is_floating_point() else -1
        encoded[main] = main_target
    tasks = {
        name: TaskSpec(name, s.kind, len(classes[name])) if s.kind == "adversarial-class" else s
        for name, s in tasks.items()
    }
    binary_w, main_w = ({}, None)
    if config.class_weighted:
        binary_w, main_w = _binary_weights(tasks, encoded, train_rows, main, device)
    return TrainingData(x, encoded, tasks, main, classes, torch.as_tensor(pool), val_rows, binary_w, main_w)
