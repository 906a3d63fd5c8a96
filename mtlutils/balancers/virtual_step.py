"""One optimizer step computed out of place, with its sensitivity d(theta')/d(gradient), for Auto-Lambda."""

from __future__ import annotations

import torch


def _groups(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    return {id(p): group for group in optimizer.param_groups for p in group["params"]}


def virtual_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    lr: float | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """theta' = the step ``optimizer`` would take from ``params`` with ``grads``, without changing the
    model or the optimizer; and ``scale`` with d theta'_k / d g_k = -scale_k (elementwise: every
    supported optimizer acts coordinate-wise).

    Adam / AdamW (the optimizer's exp_avg, exp_avg_sq, step, betas, eps, lr, (decoupled) weight decay,
    bias corrections; the first step included) and SGD (momentum buffer, dampening, Nesterov, weight
    decay) are modelled exactly. ``optimizer=None``: plain SGD with learning rate ``lr``. A parameter
    the optimizer does not hold is left unchanged (scale 0). Other optimizers raise ``TypeError``.
    """
    if optimizer is None:
        if lr is None:
            raise ValueError("virtual_step without an optimizer needs lr (plain SGD)")
        return [p.detach() - lr * g for p, g in zip(params, grads)], [torch.full_like(g, lr) for g in grads]
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        step = _adam
    elif isinstance(optimizer, torch.optim.SGD):
        step = _sgd
    else:
        raise TypeError(
            f"Auto-Lambda's virtual step models Adam, AdamW and SGD, not {type(optimizer).__name__}"
        )
    groups = _groups(optimizer)
    new: list[torch.Tensor | None] = [None] * len(params)
    scales: list[torch.Tensor | None] = [None] * len(params)
    buckets: dict[tuple, list[int]] = {}  # one vectorised step per (group, step count, dtype, device)
    for k, p in enumerate(params):
        group = groups.get(id(p))
        if group is None:
            new[k], scales[k] = p.detach(), torch.zeros_like(grads[k])
            continue
        state = optimizer.state.get(p, {})
        key = (
            id(group),
            float(state["step"]) if "step" in state else 0.0,
            "momentum_buffer" in state,
            p.dtype,
            p.device,
        )
        buckets.setdefault(key, []).append(k)
    for members in buckets.values():
        group = groups[id(params[members[0]])]
        states = [optimizer.state.get(params[k], {}) for k in members]
        flat = {
            name: torch.cat([s[name].reshape(-1) for s in states])
            for name in ("exp_avg", "exp_avg_sq", "momentum_buffer")
            if states[0].get(name) is not None
        }
        if "step" in states[0]:
            flat["step"] = states[0]["step"]
        theta = torch.cat([params[k].detach().reshape(-1) for k in members])
        g = torch.cat([grads[k].detach().reshape(-1) for k in members])
        theta_new, scale = step(theta, g, group, flat, optimizer)
        sizes = [params[k].numel() for k in members]
        for k, a, b in zip(members, theta_new.split(sizes), scale.split(sizes)):
            new[k], scales[k] = a.view_as(params[k]), b.view_as(params[k])
    return new, scales


def _adam(theta, g, group, state, optimizer) -> tuple[torch.Tensor, torch.Tensor]:
    if group.get("amsgrad") or group.get("maximize"):
        raise TypeError("Auto-Lambda's virtual step does not model amsgrad or maximize")
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    lr = float(lr)
    decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
    t = float(state["step"]) + 1.0 if "step" in state else 1.0
    m_prev = state.get("exp_avg", torch.zeros_like(theta))
    v_prev = state.get("exp_avg_sq", torch.zeros_like(theta))
    if wd and not decoupled:
        g = g + wd * theta
    m = beta1 * m_prev + (1 - beta1) * g
    v = beta2 * v_prev + (1 - beta2) * g * g
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    root = (v / bc2).sqrt()
    denom = root + eps
    if wd and decoupled:
        theta = theta * (1 - lr * wd)
    new = theta - lr * (m / bc1) / denom
    # d/dg of (m / bc1) / (sqrt(v / bc2) + eps), with dm/dg = 1 - beta1, dv/dg = 2 (1 - beta2) g
    droot = torch.where(root > 0, (1 - beta2) * g / (bc2 * root.clamp_min(1e-300)), torch.zeros_like(g))
    scale = lr * ((1 - beta1) / bc1 / denom - (m / bc1) * droot / (denom * denom))
    return new, scale


def _sgd(theta, g, group, state, optimizer) -> tuple[torch.Tensor, torch.Tensor]:
    if group.get("maximize"):
        raise TypeError("Auto-Lambda's virtual step does not model maximize")
    lr, wd = float(group["lr"]), group["weight_decay"]
    momentum, dampening, nesterov = group["momentum"], group["dampening"], group["nesterov"]
    if wd:
        g = g + wd * theta
    sensitivity = 1.0
    update = g
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf, dbuf = g, 1.0
        else:
            buf, dbuf = momentum * buf + (1 - dampening) * g, 1 - dampening
        if nesterov:
            update, sensitivity = g + momentum * buf, 1 + momentum * dbuf
        else:
            update, sensitivity = buf, dbuf
    return theta - lr * update, torch.full_like(g, lr * sensitivity)
