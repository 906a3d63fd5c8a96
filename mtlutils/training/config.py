"""Settings of one training (:class:`TrainConfig`) and what it returns (:class:`FitResult`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from mtlutils.balancers import Balancer
from mtlutils.models import GuidedNet, ReversalSchedule


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
    # learning rate of the balancer's own parameters; None: the weighting's ``recommended_lr`` (0.05 for
    # uncertainty weighting: s = log sigma^2 then reaches its stationary value within ~300 steps, i.e. a
    # default training; at the model's lr 2e-3 it moved <= 0.24 in a whole training), else ``lr``
    balancer_lr: float | None = None
    reversal: ReversalSchedule = field(default_factory=ReversalSchedule)
    # adversarial terms: "fixed" = weight 1 x the reversal schedule's lambda, kept out of a learned
    # weighting (Kendall's weight 1/(2 L) would shrink as the adversary's loss rises); "learned" = paper A
    adversary_weighting: str = "fixed"
    adversary_steps: int = 1  # updates of the adversarial heads per batch (k - 1 extra on detached features)
    adversary_lr: float | None = None  # learning rate of the adversarial heads (None: lr)
    adversary_reset_every: int = 0  # re-initialise the adversarial heads every this many epochs (0: never)
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
        if self.adversary_weighting not in {"fixed", "learned"}:
            raise ValueError(f"adversary_weighting {self.adversary_weighting!r} is not 'fixed' or 'learned'")
        if self.adversary_steps < 1 or self.adversary_reset_every < 0:
            raise ValueError("adversary_steps must be >= 1 and adversary_reset_every >= 0")
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
        """Per-task predictions of the trained model (see :func:`mtlutils.training.predict`)."""
        from mtlutils.training.predict import predict

        return predict(self.model, images, **kwargs)
