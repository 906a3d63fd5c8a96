"""PCGrad (Yu et al. 2020): project each task gradient off the others it conflicts with."""

from __future__ import annotations

import torch

from mtlutils.balancers.jacobian import AggregatingMethod


class PCGrad(AggregatingMethod):
    """Algorithm 1 of "Gradient Surgery for Multi-Task Learning": for each task i, over the other tasks
    j in a random order, if g_i^PC . g_j < 0 then g_i^PC -= (g_i^PC . g_j / |g_j|^2) g_j; update
    d = sum_i g_i^PC (a sum, like ``none``: without conflicts d = sum_i g_i).

    Worked in the span of the gradients: g_i^PC = sum_k c_ik g_k, so only the (m, m) Gram matrix is
    used (float64, on the CPU) and d = (sum_i c_i)^T G is one matrix product. The order comes from a
    generator seeded with ``seed`` (same seed, same updates). A zero gradient g_j is never projected on
    (the naive ports divide by |g_j|^2 = 0 and return NaN).
    """

    name = "pcgrad"

    def __init__(self, level: str = "parameter", seed: int = 0) -> None:
        super().__init__(level)
        self.generator = torch.Generator().manual_seed(int(seed))

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        """Coefficients w (m,) with d = w^T G, from the Gram matrix G G^T."""
        gram = gram.detach().to("cpu", torch.float64)
        m = gram.shape[0]
        total = torch.zeros(m, dtype=torch.float64)
        for i in range(m):
            coeffs = torch.zeros(m, dtype=torch.float64)
            coeffs[i] = 1.0
            for j in torch.randperm(m, generator=self.generator).tolist():
                if j == i or gram[j, j] <= 0:
                    continue
                dot = float(gram[j] @ coeffs)
                if dot < 0:
                    coeffs[j] -= dot / float(gram[j, j])
            total += coeffs
        return total

    def aggregate(self, matrix: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        return self.weights(gram).to(matrix.dtype).to(matrix.device) @ matrix
