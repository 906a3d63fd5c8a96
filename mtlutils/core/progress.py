"""Progress bars that stay readable under papermill and quiet in tests.

Every loop longer than a few seconds wraps its iterable in :func:`progress`.
``MTLUTILS_QUIET=1`` (set by the test-suite) or ``TQDM_DISABLE=1`` switches bars off.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """True unless ``MTLUTILS_QUIET`` or ``TQDM_DISABLE`` is set to a true value."""
    for name in ("MTLUTILS_QUIET", "TQDM_DISABLE"):
        if os.environ.get(name, "").lower() in {"1", "true", "yes"}:
            return False
    return True


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterator[T]:
    """Wrap ``iterable`` in a ``tqdm.auto`` bar (at most ~1 update per second, so logs stay short)."""
    kwargs.setdefault("mininterval", float(os.environ.get("TQDM_MININTERVAL", 1.0)))
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, total=total, disable=not progress_enabled(), **kwargs)
