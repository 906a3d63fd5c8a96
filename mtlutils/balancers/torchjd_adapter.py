"""The only module that imports torchjd (pinned 0.18.0): its aggregators as gradient methods, FAMO as a weighting."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch

from mtlutils.balancers.base import Weighting
from mtlutils.balancers.jacobian import AggregatingMethod
from mtlutils.models import TaskSpec

TORCHJD_VERSION = "0.18.0"
FIX = f'pip install "torchjd[quadprog_projector,cagrad,nash_mtl]=={TORCHJD_VERSION}"'


def _aggregation():
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("torchjd")
        from torchjd import aggregation
    except (ImportError, PackageNotFoundError) as error:  # pragma: no cover - a declared dependency
        raise ImportError(f"torchjd is not installed; the torchjd gradient methods need it: {FIX}") from error
    if found != TORCHJD_VERSION:  # pragma: no cover
        raise ImportError(f"torchjd {found} found, this adapter is written for {TORCHJD_VERSION}: {FIX}")
    return aggregation


def _factories() -> dict[str, Callable[[int], object]]:
    """name -> f(m) building the aggregator for m tasks (solver extras are checked by torchjd itself)."""
    agg = _aggregation()
    return {
        "upgrad": lambda m: agg.UPGrad(),
        "mgda": lambda m: agg.MGDA(),
        "nash_mtl": lambda m: agg.NashMTL(n_tasks=m),
        "aligned_mtl": lambda m: agg.AlignedMTL(),
        "imtl_g": lambda m: agg.IMTLG(),
        "dualproj": lambda m: agg.DualProj(),
        "jd_pcgrad": lambda m: agg.PCGrad(),
        "jd_cagrad": lambda m: agg.CAGrad(c=0.4),
        "jd_graddrop": lambda m: agg.GradDrop(),
    }


class TorchJDMethod(AggregatingMethod):
    """A torchjd aggregator applied to our task-gradient matrix G (m, n): same shared/head split,
    exclusion of adversarial tasks and ``level`` as every :class:`AggregatingMethod`; torchjd only turns
    G into d. Nash-MTL is stateful (built for the number of tasks of the first batch; a batch with
    another number of tasks raises). ``jd_*`` are torchjd's PCGrad / CAGrad(c=0.4) / GradDrop, for
    cross-checks. UPGrad needs quadprog, CAGrad and Nash-MTL cvxpy: installed by the pinned extras.
    """

    def __init__(self, method: str, level: str = "parameter") -> None:
        super().__init__(level)
        factories = _factories()
        if method not in factories:
            raise ValueError(f"torchjd method {method!r} is not one of {sorted(factories)}")
        self.name = method
        self._factory = factories[method]
        self._aggregators: dict[int, object] = {}
        self._aggregator(2)  # fail early on a missing solver extra

    def _aggregator(self, m: int):
        if m not in self._aggregators:
            if self.name == "nash_mtl" and self._aggregators:
                raise ValueError("nash_mtl keeps per-task state: every batch must have the same tasks")
            try:
                self._aggregators[m] = self._factory(m)
            except ImportError as error:
                raise ImportError(f"{error} -- or, for all torchjd methods at once: {FIX}") from error
        return self._aggregators[m]

    def aggregate(self, matrix: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # cvxpy's "not DPP" note on every Nash-MTL solve
            warnings.filterwarnings("ignore", message=".*not DPP.*", category=UserWarning)
            return self._aggregator(matrix.shape[0])(matrix)


class FAMOWeighting(Weighting):
    """FAMO (Liu et al. 2023) through torchjd's scalarizer: terms z_i log(L_i - b_i + e) / c with
    z = softmax(w) and c = sum_i z_i / (L_i - b_i + e) held constant (b = 0).

    torchjd updates w from the change of the losses over one model step on the *same* batch; the
    training loop here only sees each batch once, so ``before_update`` calls ``update`` with this
    batch's losses as the "after" of the previous step (a different batch: a noisier estimate of the
    change). Needs every task in every batch (else ``ValueError``). w is owned by torchjd's Adam
    (lr 0.025, weight decay 1e-3), not by the model optimizer.
    """

    name = "famo"

    def __init__(self, tasks: Mapping[str, TaskSpec], lr: float = 0.025, weight_decay: float = 1e-3) -> None:
        super().__init__(tasks)
        try:
            from torchjd.scalarization import FAMO
        except ImportError as error:  # pragma: no cover
            raise ImportError(f"famo needs torchjd: {FIX}") from error
        self.names = sorted(tasks)
        self._famo = [FAMO(len(self.names), lr=lr, weight_decay=weight_decay)]  # a list: not a submodule
        self._seen = False

    def _vector(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self._check(losses)
        missing = set(self.names) - set(losses)
        if missing:
            raise ValueError(f"famo needs every task in every batch; missing {sorted(missing)}")
        return torch.stack([losses[n] for n in self.names])

    def forward(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values = self._vector(losses)
        z = self._z(values)
        shifted = values + 1e-8
        normaliser = (z / shifted).sum().detach()
        terms = (z / normaliser) * torch.log(shifted)
        return dict(zip(self.names, terms.unbind()))

    def _z(self, values: torch.Tensor) -> torch.Tensor:
        logits = self._famo[0]._w.detach().to(values.device)  # torchjd 0.18.0 keeps w as ``_w``
        return torch.softmax(logits.flatten(), 0)

    def before_update(self, losses: Mapping[str, torch.Tensor] | None = None, **context) -> None:
        """Update w from the previous batch's losses to these, then record these as the next "before"."""
        if losses is None:
            return
        values = self._vector(losses).detach().cpu()
        if self._seen:
            self._famo[0].update(values)
        self._famo[0](values)
        self._seen = True

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.names, self._z(torch.zeros(1)).tolist()))
