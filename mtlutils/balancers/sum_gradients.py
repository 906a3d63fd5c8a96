"""Gradient method ``"none"``: back-propagate the plain sum of the weighted losses."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch

from mtlutils.balancers.base import GradientMethod, summed


class SumGradients(GradientMethod):
    """No gradient surgery: backpropagate sum_i weighted_i (one backward pass).

    Task-gradient cosines cost one extra backward per task, so they are off by default; with
    ``cosine_every=k`` every k-th step also computes the per-task gradients on the shared parameters
    (for ``cos.<a>.<b>`` in the log) before the normal backward.
    """

    name = "none"

    def __init__(self, cosine_every: int = 0) -> None:
        super().__init__()
        if cosine_every < 0:
            raise ValueError(f"cosine_every must be >= 0, got {cosine_every}")
        self.cosine_every = int(cosine_every)
        self._steps = 0

    def backward(
        self,
        weighted: Mapping[str, torch.Tensor],
        shared: Sequence[torch.Tensor],
        exclude: Collection[str] = (),
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        total = summed(weighted)
        self._steps += 1
        if self.cosine_every and self._steps % self.cosine_every == 0:
            self._record_cosines(weighted, shared, exclude)
        total.backward()
        return total.detach()

    def _record_cosines(self, weighted, shared, exclude) -> None:
        from mtlutils.balancers.jacobian import cosine_matrix

        tasks = [n for n in sorted(weighted) if n not in exclude]
        shared = list(shared)
        rows = []
        for name in tasks:
            grads = torch.autograd.grad(weighted[name], shared, retain_graph=True, materialize_grads=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        matrix = torch.stack(rows).detach()
        self.last_cosine = cosine_matrix(matrix @ matrix.T)
        self.last_cosine_tasks = tuple(tasks)
