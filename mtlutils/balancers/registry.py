"""Names of the weightings and gradient methods, and :func:`make_balancer` that builds them by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mtlutils.balancers.autol import AutoLambdaWeighting
from mtlutils.balancers.balancer import Balancer
from mtlutils.balancers.base import GradientMethod, Weighting
from mtlutils.balancers.cagrad import CAGrad
from mtlutils.balancers.dwa import DWAWeighting
from mtlutils.balancers.graddrop import GradDrop
from mtlutils.balancers.naive import NaiveWeighting
from mtlutils.balancers.pcgrad import PCGrad
from mtlutils.balancers.sum_gradients import SumGradients
from mtlutils.balancers.uncertainty import UncertaintyWeighting
from mtlutils.models import TaskSpec, parse_tasks


def _famo(tasks, **options) -> Weighting:
    from mtlutils.balancers.torchjd_adapter import FAMOWeighting

    return FAMOWeighting(tasks, **options)


WEIGHTINGS: dict[str, Callable[..., Weighting]] = {
    "naive": NaiveWeighting,
    "vanilla": NaiveWeighting,
    "uncert": UncertaintyWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DWAWeighting,
    "autol": AutoLambdaWeighting,
    "famo": _famo,
}


def _none(level: str = "parameter", seed: int = 0, **options) -> GradientMethod:
    return SumGradients(**options)  # level is irrelevant: nothing is aggregated


def _seeded(cls):
    return lambda level="parameter", seed=0, **options: cls(level=level, seed=seed, **options)


def _unseeded(cls):
    return lambda level="parameter", seed=0, **options: cls(level=level, **options)


def _torchjd(name: str):
    def build(level: str = "parameter", seed: int = 0, **options) -> GradientMethod:
        from mtlutils.balancers.torchjd_adapter import TorchJDMethod

        return TorchJDMethod(name, level=level, **options)

    return build


TORCHJD_NAMES = (
    "upgrad",
    "mgda",
    "nash_mtl",
    "aligned_mtl",
    "imtl_g",
    "dualproj",
    "jd_pcgrad",
    "jd_cagrad",
    "jd_graddrop",
)
GRADIENT_METHODS: dict[str, Callable[..., GradientMethod]] = {
    "none": _none,
    "graddrop": _seeded(GradDrop),
    "pcgrad": _seeded(PCGrad),
    "cagrad": _unseeded(CAGrad),
    **{name: _torchjd(name) for name in TORCHJD_NAMES},
}
PAPER_B_WEIGHTINGS = ("naive", "uncert", "dwa", "autol")
PAPER_B_GRADIENTS = ("none", "graddrop", "pcgrad", "cagrad")


def make_balancer(
    weighting: str = "naive",
    gradient: str = "none",
    tasks: Mapping[str, str | TaskSpec] | None = None,
    *,
    level: str = "parameter",
    seed: int = 0,
    gradient_options: Mapping | None = None,
    **options,
) -> Balancer:
    """Build a :class:`Balancer` by names, e.g. ``make_balancer("uncert", "pcgrad", tasks)``.

    ``options`` go to the weighting (``weights={...}`` for naive, ``init_log_var=`` for uncert,
    ``temperature=`` for dwa, ``primary=``, ``meta_lr=``, ``hvp=`` for autol); ``gradient_options`` to
    the gradient method (``c=``, ``rescale=`` for cagrad, ``cosine_every=`` for none). ``level``:
    ``"parameter"`` or ``"representation"`` (then ``backward(..., features=z)``); ``seed`` seeds the
    random choices of pcgrad and graddrop.
    """
    if tasks is None:
        raise ValueError("make_balancer needs the tasks, e.g. {'tumour': 'binary', 'count': 'regression'}")
    specs = parse_tasks(tasks)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {sorted(WEIGHTINGS)}")
    if gradient not in GRADIENT_METHODS:
        raise ValueError(f"gradient method {gradient!r} is not one of {sorted(GRADIENT_METHODS)}")
    method = GRADIENT_METHODS[gradient](level=level, seed=seed, **dict(gradient_options or {}))
    return Balancer(WEIGHTINGS[weighting](specs, **options), method)
