"""CAGrad (Liu et al. 2021): the update that maximises the worst task improvement near the mean gradient."""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlutils.balancers.jacobian import AggregatingMethod


def _objective(w: np.ndarray, gram: np.ndarray, c_norm: float) -> float:
    """g_w^T g_0 + c |g_0| |g_w| over the simplex (g_0 = mean gradient)."""
    return float(w @ gram.mean(1)) + c_norm * math.sqrt(max(float(w @ gram @ w), 0.0))


def simplex_weights(gram: np.ndarray, c: float) -> np.ndarray:
    """argmin over the simplex of w^T G g_0 + c |g_0| |G^T w|, from the Gram matrix (float64).

    m = 2: a golden-section search on w = (t, 1 - t) (convex in t; 1e-12 tolerance). m > 2: SLSQP.
    """
    m = gram.shape[0]
    g0_norm = math.sqrt(max(float(gram.mean()), 0.0))
    c_norm = c * g0_norm
    if m == 1:
        return np.ones(1)
    if m == 2:
        lo, hi = 0.0, 1.0
        ratio = (math.sqrt(5.0) - 1.0) / 2.0

        def f(t: float) -> float:
            return _objective(np.array([t, 1.0 - t]), gram, c_norm)

        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = f(a), f(b)
        while hi - lo > 1e-12:
            if fa <= fb:
                hi, b, fb = b, a, fa
                a = hi - ratio * (hi - lo)
                fa = f(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + ratio * (hi - lo)
                fb = f(b)
        t = 0.5 * (lo + hi)
        candidates = [np.array([t, 1.0 - t]), np.array([1.0, 0.0]), np.array([0.0, 1.0])]
        return min(candidates, key=lambda w: _objective(w, gram, c_norm))
    from scipy.optimize import minimize

    result = minimize(
        _objective,
        np.full(m, 1.0 / m),
        args=(gram, c_norm),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return np.clip(result.x, 0.0, None) / np.clip(result.x, 0.0, None).sum()


class CAGrad(AggregatingMethod):
    """Conflict-Averse Gradient descent: d = g_0 + (c |g_0| / |g_w|) g_w with g_0 the *mean* task
    gradient and w the simplex weights of :func:`simplex_weights`; c = 0.4 (paper's default).

    c = 0 gives the mean gradient (so a CAGrad step is ~1/m of the summed step of ``none``). We do *not*
    rescale by 1 / (1 + c^2) unless ``rescale=True`` (the official code's option; torchjd doesn't).
    If |g_w| is ~0 (a Pareto-stationary point) d = g_0; if every gradient is zero, d = 0.
    """

    name = "cagrad"

    def __init__(self, level: str = "parameter", c: float = 0.4, rescale: bool = False) -> None:
        super().__init__(level)
        if not (c >= 0 and math.isfinite(c)):
            raise ValueError(f"c must be >= 0, got {c}")
        self.c = float(c)
        self.rescale = bool(rescale)

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        """Coefficients (m,) with d = coefficients^T G."""
        g = gram.detach().to("cpu", torch.float64).numpy()
        m = g.shape[0]
        coeffs = np.full(m, 1.0 / m)
        g0_norm = math.sqrt(max(float(g.mean()), 0.0))
        if self.c > 0 and g0_norm > 0:
            w = simplex_weights(g, self.c)
            gw_norm = math.sqrt(max(float(w @ g @ w), 0.0))
            if gw_norm > 1e-12 * max(g0_norm, 1e-300):
                coeffs = coeffs + (self.c * g0_norm / gw_norm) * w
        if self.rescale:
            coeffs = coeffs / (1.0 + self.c**2)
        return torch.from_numpy(coeffs)

    def aggregate(self, matrix: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        return self.weights(gram).to(device=matrix.device, dtype=matrix.dtype) @ matrix
