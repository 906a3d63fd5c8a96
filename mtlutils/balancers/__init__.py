"""Loss balancers for multi-task training: a *weighting* scales the task losses, a *gradient method*
turns the weighted losses into gradients of the shared parameters; :class:`Balancer` composes the two.

Combination rule (torchjd-like; paper B's 16 balancers follow it): the weighting scales the losses, the
gradient method acts on the per-task gradients of the *weighted* losses, on the shared parameters only;
heads keep their own gradients. Adversarial tasks (behind a gradient reversal layer) are passed as
``exclude``: their gradient is added *after* aggregation, never projected.

Weightings (``make_balancer(weighting, ...)``)
    ``naive`` (``vanilla``)   sum_i lambda_i L_i, fixed lambda (default 1)            naive.py
    ``uncert`` (``uncertainty``)  Kendall et al. 2018, learned s = log sigma^2       uncertainty.py
    ``dwa``                   Dynamic Weight Average, T = 2, from epoch-mean losses   dwa.py
    ``autol``                 Auto-Lambda, meta-learned lambda by a virtual step      autol.py
    ``famo``                  FAMO through torchjd's scalarizer                       torchjd_adapter.py
Gradient methods (``make_balancer(..., gradient, level=...)``)
    ``none``                  backpropagate the sum                                   sum_gradients.py
    ``graddrop``              gradient sign dropout (parameter- or activation-level)  graddrop.py
    ``pcgrad``                projecting conflicting gradients                        pcgrad.py
    ``cagrad``                conflict-averse gradient descent, c = 0.4               cagrad.py
    ``upgrad``, ``mgda``, ``nash_mtl``, ``aligned_mtl``, ``imtl_g``, ``dualproj``, ``jd_pcgrad``,
    ``jd_cagrad``, ``jd_graddrop``: torchjd 0.18.0's aggregators             torchjd_adapter.py
Every aggregating method shares jacobian.py (per-task gradient matrix, ``level="parameter"`` or
``"representation"``, one backward for the heads); the training-loop hooks are ``before_update``
(Auto-Lambda's virtual step, virtual_step.py) and ``end_epoch`` (DWA).

Extension points: a new weighting subclasses :class:`Weighting` and registers in :data:`WEIGHTINGS`; a
new aggregator subclasses :class:`AggregatingMethod` (``aggregate(G, gram) -> d``) and registers a
factory in :data:`GRADIENT_METHODS`.
"""

from mtlutils.balancers.autol import AutoLambdaWeighting
from mtlutils.balancers.balancer import Balancer
from mtlutils.balancers.base import REGRESSION_KINDS, GradientMethod, Weighting
from mtlutils.balancers.cagrad import CAGrad
from mtlutils.balancers.dwa import DWAWeighting
from mtlutils.balancers.graddrop import GradDrop
from mtlutils.balancers.jacobian import AggregatingMethod
from mtlutils.balancers.naive import NaiveWeighting
from mtlutils.balancers.pcgrad import PCGrad
from mtlutils.balancers.registry import (
    GRADIENT_METHODS,
    PAPER_B_GRADIENTS,
    PAPER_B_WEIGHTINGS,
    TORCHJD_NAMES,
    WEIGHTINGS,
    make_balancer,
)
from mtlutils.balancers.sum_gradients import SumGradients
from mtlutils.balancers.uncertainty import UncertaintyWeighting
from mtlutils.balancers.virtual_step import virtual_step

__all__ = [
    "GRADIENT_METHODS",
    "PAPER_B_GRADIENTS",
    "PAPER_B_WEIGHTINGS",
    "REGRESSION_KINDS",
    "TORCHJD_NAMES",
    "WEIGHTINGS",
    "AggregatingMethod",
    "AutoLambdaWeighting",
    "Balancer",
    "CAGrad",
    "DWAWeighting",
    "GradDrop",
    "GradientMethod",
    "NaiveWeighting",
    "PCGrad",
    "SumGradients",
    "UncertaintyWeighting",
    "Weighting",
    "make_balancer",
    "virtual_step",
]
