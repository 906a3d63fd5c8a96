"""GradDrop (Chen et al. 2020): keep, per coordinate, only the gradients of one randomly chosen sign."""

from __future__ import annotations

import torch

from mtlutils.balancers.jacobian import AggregatingMethod


class GradDrop(AggregatingMethod):
    """Gradient sign dropout, leak 0: per coordinate, the positive sign purity
    P = 1/2 (1 + sum_i g_i / sum_i |g_i|) and U ~ Uniform(0, 1); keep the positive components where
    P > U and the negative ones where P < U; d = sum of the kept components.

    Two algorithms share this name. With ``level="representation"`` this is the paper's version:
    the coordinates are the elements of the (B, d) activation where the heads branch (``features``),
    and the masked gradient is back-propagated through the trunk. With ``level="parameter"`` (default)
    it is the variant most ports (and torchjd) implement: the same rule on every coordinate of the
    shared parameters' gradients. When all tasks agree in sign on a coordinate it is kept whatever U is.
    U comes from a generator seeded with ``seed`` (same seed, same masks).
    """

    name = "graddrop"

    def __init__(self, level: str = "parameter", seed: int = 0) -> None:
        super().__init__(level)
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def aggregate(self, matrix: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        summed_abs = matrix.abs().sum(0)
        purity = 0.5 * (1.0 + matrix.sum(0) / summed_abs.clamp_min(torch.finfo(matrix.dtype).tiny))
        u = torch.rand(matrix.shape[1], generator=self._generator(matrix.device), device=matrix.device)
        keep = torch.where(matrix > 0, purity > u, (purity < u) & (matrix < 0))
        return (matrix * keep).sum(0)
