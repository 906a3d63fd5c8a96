"""The optimizer of a training: decayed weights, undecayed biases and norms, the balancer's own parameters."""

from __future__ import annotations

import torch

from mtlutils.balancers import Balancer
from mtlutils.training.config import TrainConfig


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
