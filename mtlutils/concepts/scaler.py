"""Z-scores of concepts fitted on the training split only (NaN-aware), stored as JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtlutils.concepts.patch import CONCEPTS

if TYPE_CHECKING:  # pandas is imported lazily: worker processes do not need it
    import pandas as pd


class ConceptScaler:
    """Z-scores of concepts, fitted on one split (NaN-aware) and applied unchanged to the others.

    ``z = (x − mean) / sd`` with the mean and the population SD (ddof 0) of the finite fitting values;
    NaN stays NaN (a missing target is masked, never replaced). Stored as JSON with
    :meth:`save` / :meth:`load` (or :meth:`to_dict` / :meth:`from_dict`).
    """

    def __init__(self, names: Sequence[str] | None = None):
        self.names: list[str] = list(CONCEPTS if names is None else names)
        if not self.names:
            raise ValueError("ConceptScaler needs at least one concept name")
        self.mean: dict[str, float] = {}
        self.scale: dict[str, float] = {}
        self.n: dict[str, int] = {}
        self.skipped: dict[str, str] = {}  #: concepts left out by fit(skip_unfit=True), with the reason
        self.fitted_on: str = ""

    @property
    def is_fitted(self) -> bool:
        return bool(self.mean)

    def _columns(self, frame: Any, what: str) -> None:
        missing = [name for name in self.names if name not in getattr(frame, "columns", [])]
        if missing:
            raise ValueError(
                f"ConceptScaler.{what}: the table lacks concept column(s) {missing}; pass a concepts table"
            )

    def fit(self, frame: pd.DataFrame, fitted_on: str = "", skip_unfit: bool = False) -> ConceptScaler:
        """Learn mean and SD of each concept from ``frame`` (the training rows only); return self.

        A concept with fewer than 2 finite values or no spread cannot be standardised: an error, or
        with ``skip_unfit=True`` it is left out of :attr:`names` and listed in :attr:`skipped` (reason).
        """
        self._columns(frame, "fit")
        mean, scale, n, skipped = {}, {}, {}, {}
        for name in self.names:
            values = np.asarray(frame[name], dtype=np.float64)
            values = values[np.isfinite(values)]
            problem = ""
            if values.size < 2:
                problem = f"{values.size} finite value(s) in the fitting rows"
            elif not float(values.std()) > 0:
                problem = f"it is constant ({values[0]:g}) on the fitting rows"
            if problem:
                if skip_unfit:
                    skipped[name] = problem
                    continue
                raise ValueError(
                    f"cannot standardise concept {name!r}: {problem}; fit on more patches or leave it out "
                    "with ConceptScaler(names=[...])"
                )
            mean[name], scale[name], n[name] = float(values.mean()), float(values.std()), int(values.size)
        if not mean:
            raise ValueError(f"cannot standardise any concept on these rows ({skipped}); fit on more patches")
        self.names = [name for name in self.names if name in mean]
        self.mean, self.scale, self.n, self.skipped = mean, scale, n, skipped
        self.fitted_on = str(fitted_on)
        return self

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError("ConceptScaler is not fitted; call fit(train_table) or load(path) first")

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Z-scored copy of the concept columns of ``frame`` (same index; NaN stays NaN)."""
        import pandas as pd

        self._check_fitted()
        self._columns(frame, "transform")
        return pd.DataFrame(
            {
                name: (np.asarray(frame[name], dtype=np.float64) - self.mean[name]) / self.scale[name]
                for name in self.names
            },
            index=frame.index,
        )

    def fit_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.fit(frame).transform(frame)

    def inverse_transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Concept values (original units) from z-scores."""
        import pandas as pd

        self._check_fitted()
        self._columns(frame, "inverse_transform")
        return pd.DataFrame(
            {
                name: np.asarray(frame[name], dtype=np.float64) * self.scale[name] + self.mean[name]
                for name in self.names
            },
            index=frame.index,
        )

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "names": list(self.names),
            "mean": dict(self.mean),
            "scale": dict(self.scale),
            "n": dict(self.n),
            "fitted_on": self.fitted_on,
            "skipped": dict(self.skipped),
            "units": {name: CONCEPTS[name].unit for name in self.names if name in CONCEPTS},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptScaler:
        try:
            scaler = cls(data["names"])
            scaler.mean = {k: float(data["mean"][k]) for k in scaler.names}
            scaler.scale = {k: float(data["scale"][k]) for k in scaler.names}
            scaler.n = {k: int(data.get("n", {}).get(k, 0)) for k in scaler.names}
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"not a ConceptScaler dictionary (missing {err}); write it with ConceptScaler.to_dict()"
            ) from None
        bad = [k for k in scaler.names if not (math.isfinite(scaler.mean[k]) and scaler.scale[k] > 0)]
        if bad:
            raise ValueError(f"ConceptScaler dictionary has invalid mean/scale for {bad}; fit it again")
        scaler.fitted_on = str(data.get("fitted_on", ""))
        scaler.skipped = {str(k): str(v) for k, v in dict(data.get("skipped", {})).items()}
        return scaler

    def save(self, path: str | os.PathLike) -> Path:
        from mtlutils.core.io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConceptScaler:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"concept scaler {path} does not exist; run `mtlutils concepts --patches DIR` first"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"concept scaler {path} is not valid JSON ({err.msg}); delete it and extract again"
            ) from None
        return cls.from_dict(data)

    def __repr__(self) -> str:
        state = f"fitted on {self.fitted_on or 'a table'}" if self.is_fitted else "not fitted"
        return f"ConceptScaler({self.names}, {state})"
