"""Key numbers of a run: ``record("01.n_slides", 24)``.

The runner sets ``MTLUTILS_FIGURES`` to a JSON file; each call merges one key into it (atomically), and
the runner copies the file into ``results.json["figures"]``. Interactively (no variable set) values are
kept in memory and shown, so notebooks behave the same in JupyterLab.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mtlutils.core.io import atomic_write_json

FIGURES_ENV = "MTLUTILS_FIGURES"
_memory: dict[str, Any] = {}


def to_jsonable(value: Any) -> Any:
    """Convert NumPy/pandas scalars, arrays and frames to plain JSON types (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # DataFrame -> list of rows
        return to_jsonable(value.to_dict(orient="records"))
    if hasattr(value, "to_dict"):  # Series
        return to_jsonable(value.to_dict())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"record(): cannot store a value of type {type(value).__name__}; pass numbers, strings, lists or dicts"
    )


def record(key: str, value: Any) -> Any:
    """Store ``value`` under ``key`` (e.g. ``"03.best_ext_gain"``) in this run's figures; return it."""
    clean = to_jsonable(value)
    _memory[key] = clean
    target = os.environ.get(FIGURES_ENV)
    if target:
        _merge_into(Path(target), key, clean)
    return value


def _merge_into(path: Path, key: str, value: Any) -> None:
    """Set ``key`` in the JSON object of ``path`` (created when missing), keeping every other key; the
    file is replaced atomically, so the runner never reads a half-written one."""
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[key] = value
    atomic_write_json(path, figures, indent=1)


def recorded() -> dict[str, Any]:
    """Everything recorded in this process so far."""
    return dict(_memory)
