"""Auto-Lambda (Liu, James, Davison & Johns 2022): task weights meta-learned by a virtual optimizer step."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from mtlutils.balancers.base import Weighting
from mtlutils.balancers.virtual_step import virtual_step
from mtlutils.models import TaskSpec, main_task_name

LossFn = Callable[[nn.Module], Mapping[str, torch.Tensor]]
HVP_MODES = ("finite-difference", "exact")


class AutoLambdaWeighting(Weighting):
    """sum_i lambda_i L_i with lambda updated before every step by a meta-gradient:

    theta' = step(theta, g), g = grad_theta sum_i lambda_i L_i(theta) on the training batch (the model
    optimizer's own step, out of place: Adam/AdamW moments and bias correction, decoupled weight decay,
    or SGD momentum/Nesterov; see :func:`virtual_step`), and
    lambda <- Adam(lambda, dL_pri(theta') / dlambda), L_pri = sum of the *primary* tasks' losses on a
    second batch (``loss_fn``). With dtheta'/dg = -diag(s): dL_pri/dlambda_i = -g_i . u, u = s * v,
    v = grad L_pri(theta'), g_i = grad L_i(theta). ``hvp="finite-difference"`` (paper's): g_i . u =
    [L_i(theta + eps u) - L_i(theta - eps u)] / (2 eps), eps = 0.01 / |u| (the perturbation has norm
    0.01), two extra forwards of the training batch (``train_loss_fn``, same random state for both);
    ``hvp="exact"``: g_i from one backward per task. For SGD s = lr, the published algorithm; for
    AdamW the published virtual step (SGD-shaped) would be wrong, the preconditioner is modelled.

    Defaults: lambda init 0.1 for every task, meta-optimizer Adam lr 1e-4 (betas 0.9, 0.999, no weight
    decay), lambda unconstrained (it may become negative), ``primary`` = the main (only binary) task;
    ``primary="all"`` is the multi-objective variant paper B describes. lambda is a buffer, not a
    parameter: the model optimizer never sees it. The virtual step runs on a private copy of the model
    (made once, parameters and buffers copied in each step). Cost: ~3 extra forward/backward passes.
    A step whose second batch lacks every primary task leaves lambda unchanged (``skipped`` counts them).
    """

    name = "autol"

    def __init__(
        self,
        tasks: Mapping[str, TaskSpec],
        primary: str | Sequence[str] | None = None,
        init: float = 0.1,
        meta_lr: float = 1e-4,
        hvp: str = "finite-difference",
        update_every: int = 1,
        virtual_lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
    ) -> None:
        super().__init__(tasks)
        if hvp not in HVP_MODES:
            raise ValueError(f"hvp {hvp!r} is not one of {HVP_MODES}")
        if primary is None:
            primary = [main_task_name(self.tasks)]
        elif primary == "all":
            primary = sorted(tasks)
        elif isinstance(primary, str):
            primary = [primary]
        unknown = set(primary) - set(tasks)
        if unknown:
            raise ValueError(f"primary tasks {sorted(unknown)} are not among {sorted(tasks)}")
        self.names = sorted(tasks)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.primary = sorted(primary)
        self.meta_lr, self.betas, self.hvp = float(meta_lr), betas, hvp
        self.update_every, self.virtual_lr = int(update_every), virtual_lr
        m = len(self.names)
        self.register_buffer("lambdas", torch.full((m,), float(init)))
        self.register_buffer("exp_avg", torch.zeros(m))
        self.register_buffer("exp_avg_sq", torch.zeros(m))
        self.register_buffer("meta_steps", torch.zeros((), dtype=torch.long))
        self.calls = 0
        self.skipped = 0
        self._shadow: list[tuple[nn.Module, nn.Module]] = []  # (copy, model): not a submodule

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._check(losses)
        return {name: self.lambdas[self.index[name]] * losses[name] for name in sorted(losses)}

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.names, self.lambdas.tolist()))

    def log_values(self) -> dict[str, float]:
        values = super().log_values()
        values["autol.skipped"] = float(self.skipped)
        return values

    # -- meta step -------------------------------------------------------------------------------
    def before_update(
        self,
        model: nn.Module | None = None,
        losses: Mapping[str, torch.Tensor] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        loss_fn: LossFn | None = None,
        train_loss_fn: LossFn | None = None,
        **context,
    ) -> None:
        """Update lambda from this batch (``losses``, graph attached) and a second batch (``loss_fn``)."""
        self.calls += 1
        if (self.calls - 1) % self.update_every:
            return
        grad = self.hypergradient(model, losses, optimizer, loss_fn, train_loss_fn)
        if grad is None:
            self.skipped += 1
            return
        g = torch.tensor([grad.get(n, 0.0) for n in self.names], dtype=self.lambdas.dtype)
        g = g.to(self.lambdas.device)
        beta1, beta2 = self.betas
        self.meta_steps += 1
        t = float(self.meta_steps)
        self.exp_avg.mul_(beta1).add_((1 - beta1) * g)
        self.exp_avg_sq.mul_(beta2).add_((1 - beta2) * g * g)
        denom = (self.exp_avg_sq / (1 - beta2**t)).sqrt() + 1e-8
        self.lambdas.sub_(self.meta_lr * (self.exp_avg / (1 - beta1**t)) / denom)

    def hypergradient(
        self,
        model: nn.Module | None,
        losses: Mapping[str, torch.Tensor] | None,
        optimizer: torch.optim.Optimizer | None,
        loss_fn: LossFn | None,
        train_loss_fn: LossFn | None = None,
    ) -> dict[str, float] | None:
        """dL_pri(theta') / dlambda_i per task of this batch (None when the second batch has no primary)."""
        if model is None or losses is None or loss_fn is None:
            raise ValueError(
                "autol needs before_update(model=..., losses=..., optimizer=..., loss_fn=..., "
                "train_loss_fn=...): loss_fn(module) -> task losses of a second training batch"
            )
        if optimizer is None and self.virtual_lr is None:
            raise ValueError("autol needs the model optimizer (optimizer=...) or virtual_lr= for an SGD step")
        if self.hvp == "finite-difference" and train_loss_fn is None:
            raise ValueError("autol with hvp='finite-difference' needs train_loss_fn; or use hvp='exact'")
        self._check(losses)
        present = sorted(losses)
        params = [p for p in model.parameters() if p.requires_grad]
        per_task = None
        if self.hvp == "exact":
            per_task = [self._grads(losses[n], params) for n in present]
            lam = [self.lambdas[self.index[n]] for n in present]
            grads = [sum(w * g[k] for w, g in zip(lam, per_task)) for k in range(len(params))]
        else:
            total = torch.stack([self.lambdas[self.index[n]] * losses[n] for n in present]).sum()
            grads = self._grads(total, params)
        new, scales = virtual_step(params, grads, optimizer, self.virtual_lr)

        shadow, pairs = self._shadow_of(model)
        shadow_params = [sp for sp, p in pairs if p.requires_grad]
        self._load(pairs, model, shadow, new)
        val = loss_fn(shadow)
        primary = [val[n] for n in self.primary if n in val]
        if not primary:
            return None
        v = self._grads(torch.stack(primary).sum(), shadow_params)
        u = [s * vk for s, vk in zip(scales, v)]
        if per_task is not None:
            return {
                n: -float(sum((gk * uk).sum() for gk, uk in zip(g, u))) for n, g in zip(present, per_task)
            }
        norm = float(torch.stack(torch._foreach_norm(u)).norm())
        if norm == 0.0:
            return dict.fromkeys(present, 0.0)
        eps = 0.01 / norm
        outs = []
        devices = sorted({p.device.index for p in params if p.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            state = torch.get_rng_state()
            cuda_state = [torch.cuda.get_rng_state(d) for d in devices]
            for sign in (1.0, -1.0):
                torch.set_rng_state(state)
                for d, s in zip(devices, cuda_state):
                    torch.cuda.set_rng_state(s, d)
                self._load(
                    pairs,
                    model,
                    shadow,
                    torch._foreach_add([p.detach() for p in params], u, alpha=sign * eps),
                )
                outs.append(train_loss_fn(shadow))
        plus, minus = outs
        return {n: -float(plus[n] - minus[n]) / (2 * eps) for n in present if n in plus and n in minus}

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _grads(output: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = torch.autograd.grad(output, params, retain_graph=True, materialize_grads=True)
        return [g.detach() for g in grads]

    def _shadow_of(self, model: nn.Module) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
        if not self._shadow or self._shadow[0][1] is not model:
            shadow = copy.deepcopy(model)
            for p in shadow.parameters():
                p.grad = None
            self._shadow[:] = [(shadow, model)]
        shadow = self._shadow[0][0]
        shadow.train(model.training)
        return shadow, list(zip(shadow.parameters(), model.parameters()))

    @staticmethod
    def _load(pairs, model: nn.Module, shadow: nn.Module, trainable_values: list[torch.Tensor]) -> None:
        """Shadow <- model's buffers and frozen parameters, and ``trainable_values`` for the others."""
        values = iter(trainable_values)
        with torch.no_grad():
            targets = [sp for sp, _ in pairs] + list(shadow.buffers())
            sources = [next(values) if p.requires_grad else p for _, p in pairs] + list(model.buffers())
            torch._foreach_copy_(targets, sources)
