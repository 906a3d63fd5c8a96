"""Per-task gradient matrix on the shared parameters (or embedding), aggregation, one backward for the rest."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch

from mtlutils.balancers.base import GradientMethod, summed

LEVELS = ("parameter", "representation")


def other_leaves(root: torch.Tensor, shared: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Leaf tensors (requiring grad) in the graph of ``root`` that are not in ``shared``: heads and
    weighting parameters. One walk over the autograd graph."""
    shared_ids = {id(p) for p in shared}
    seen: set[int] = set()
    found: dict[int, torch.Tensor] = {}
    stack = [root.grad_fn] if root.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            if id(variable) not in shared_ids:
                found[id(variable)] = variable
            continue
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)
    return list(found.values())


def cosine_matrix(gram: torch.Tensor) -> torch.Tensor:
    """(m, m) cosines from a Gram matrix G G^T; 0 where a gradient is exactly zero."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    outer = norms[:, None] * norms[None, :]
    return torch.where(outer > 0, gram / outer.clamp_min(torch.finfo(gram.dtype).tiny), 0.0)


class AggregatingMethod(GradientMethod):
    """Base of every conflict-resolving method: subclasses implement ``aggregate(G) -> d``.

    ``level="parameter"`` (default): G (m, n) holds the gradients of the m non-excluded weighted losses
    w.r.t. the n shared parameters (one ``autograd.grad`` per task, flattened), d (n,) becomes their
    ``.grad``; heads and weighting parameters get theirs from one backward restricted to them (no pass
    through the trunk). Cost: one trunk backward per task (+1 if excluded tasks exist).
    ``level="representation"``: G (m, B*d) holds the gradients w.r.t. the shared embedding ``features``
    (the tensor the heads read), d is back-propagated through the trunk once together with the heads'
    and excluded tasks' gradients. Cost ~ a plain step for any m, but conflicts are judged per sample in
    embedding space, not on the parameters (the trunk's Jacobian is not taken into account).
    Excluded (adversarial) tasks are never aggregated: their gradient is added to d unchanged.
    Non-finite task gradients raise ``FloatingPointError`` naming the tasks.
    """

    def __init__(self, level: str = "parameter") -> None:
        super().__init__()
        if level not in LEVELS:
            raise ValueError(f"level {level!r} is not one of {LEVELS}")
        self.level = level
        self._leaves: dict[tuple[str, ...], tuple[Sequence[torch.Tensor], list[torch.Tensor]]] = {}

    def aggregate(self, matrix: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """(m, n) task gradients and their (m, m) Gram matrix -> (n,) update direction."""
        raise NotImplementedError

    def backward(
        self,
        weighted: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total = summed(weighted)
        tasks = [name for name in sorted(weighted) if name not in exclude]
        if not tasks:  # only adversarial terms in this batch: nothing to aggregate
            total.backward()
            return total.detach()
        if self.level == "representation":
            self._backward_representation(weighted, tasks, total, features)
        else:
            self._backward_parameters(weighted, tasks, total, shared, exclude)
        return total.detach()

    # -- parameter level -------------------------------------------------------------------------
    def _backward_parameters(self, weighted, tasks, total, shared, exclude) -> None:
        shared = list(shared)
        excluded = [name for name in sorted(weighted) if name in exclude]
        key = tuple(sorted(weighted))
        cached = self._leaves.get(key)
        if cached is None or cached[0] is not shared and list(cached[0]) != shared:
            cached = (shared, other_leaves(total, shared))
            self._leaves[key] = cached
        others = cached[1]
        rows = []
        for name in tasks:
            grads = torch.autograd.grad(weighted[name], shared, retain_graph=True, materialize_grads=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        matrix = torch.stack(rows)
        direction = self.aggregate(matrix, self._gram(matrix, tasks))
        pieces = list(torch.split(direction, [p.numel() for p in shared]))
        if excluded:
            adv_total = torch.stack([weighted[n] for n in excluded]).sum()
            adv = torch.autograd.grad(adv_total, shared, retain_graph=bool(others), materialize_grads=True)
            pieces = [piece + g.reshape(-1) for piece, g in zip(pieces, adv)]
        for param, piece in zip(shared, pieces):
            piece = piece.view_as(param)
            if param.grad is None:
                param.grad = piece
            else:
                param.grad.add_(piece)
        if others:
            torch.autograd.backward(total, inputs=others)

    # -- representation level --------------------------------------------------------------------
    def _backward_representation(self, weighted, tasks, total, features) -> None:
        if features is None or not features.requires_grad:
            raise ValueError(
                f"{self.name} at level='representation' needs backward(..., features=z) with z the shared "
                "embedding the heads read (requires grad)"
            )
        per_task = [
            torch.autograd.grad(weighted[n], features, retain_graph=True, materialize_grads=True)[0]
            for n in tasks
        ]
        matrix = torch.stack([g.reshape(-1) for g in per_task])
        direction = self.aggregate(matrix, self._gram(matrix, tasks)).view_as(features)
        # total's backward brings sum_i dz_i (+ the excluded tasks' dz) to z; replace sum_i dz_i by d
        correction = direction - matrix.sum(0).view_as(features)
        torch.autograd.backward([total, features], [torch.ones_like(total), correction])

    # -- helpers ---------------------------------------------------------------------------------
    def _gram(self, matrix: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        """G G^T; raises on non-finite gradients and records the cosines."""
        gram = matrix @ matrix.T
        diagonal = gram.diagonal()
        if not bool(torch.isfinite(diagonal).all()):
            bad = [t for t, v in zip(tasks, diagonal.tolist()) if not math.isfinite(v)]
            raise FloatingPointError(f"non-finite gradients of tasks {bad} ({self.name}); lower the lr?")
        self.last_cosine = cosine_matrix(gram.detach())
        self.last_cosine_tasks = tuple(tasks)
        return gram
