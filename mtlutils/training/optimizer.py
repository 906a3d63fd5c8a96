"""The optimizer of a training: decayed weights, undecayed biases and norms, the balancer's own parameters."""

from __future__ import annotations

import torch

from mtlutils.balancers import Balancer
from mtlutils.training.config import TrainConfig


def balancer_lr(balancer: Balancer, config: TrainConfig) -> float:
    """The balancer group's learning rate: ``config.balancer_lr``, else the weighting's ``recommended_lr``
    (0.05 for uncertainty weighting), else the model's ``config.lr``."""
    if config.balancer_lr is not None:
        return float(config.balancer_lr)
    recommended = getattr(balancer, "recommended_lr", None)
    return float(recommended) if recommended is not None else float(config.lr)


def make_optimizer(model: torch.nn.Module, balancer: Balancer, config: TrainConfig) -> torch.optim.Optimizer:
    """Parameter groups: decayed weights (conv/linear, ndim >= 2), undecayed biases/norms, the adversarial
    heads (at ``config.adversary_lr``, decayed like the weights) and the balancer's parameters (uncertainty
    log-variances, at :func:`balancer_lr`), never decayed. Frozen parameters are left out."""
    adversary = {
        id(p) for name, head in getattr(model, "adversaries", dict)().items() for p in head.parameters()
    }
    decay, no_decay, adv = [], [], []
    for param in model.parameters():
        if param.requires_grad:
            (adv if id(param) in adversary else decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay, "group": "weights"},
        {"params": no_decay, "weight_decay": 0.0, "group": "biases_norms"},
    ]
    if adv:
        groups.append({"params": adv, "weight_decay": config.weight_decay, "group": "adversary"})
        if config.adversary_lr is not None:
            groups[-1]["lr"] = config.adversary_lr
    balancer_params = [p for p in balancer.parameters() if p.requires_grad]
    if balancer_params:
        groups.append(
            {
                "params": balancer_params,
                "weight_decay": 0.0,
                "group": "balancer",
                "lr": balancer_lr(balancer, config),
            }
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr)
