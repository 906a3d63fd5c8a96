"""Progress bars that stay readable under papermill and quiet in tests.

Every loop longer than a few seconds wraps its iterable in :func:`progress`.
``MTLUTILS_QUIET=1`` (set by the test-suite) or ``TQDM_DISABLE=1`` switches bars off. Under the
notebook runner (batch, papermill) a loop leaves one text line with its final count and time, not a
widget and not dozens of stderr updates; in JupyterLab with ``ipywidgets`` installed the bar is a widget.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
BATCH_ENV = "MTLUTILS_FIGURES"  #: set by the notebook runner (see :mod:`mtlutils.core.record`)
BATCH_MININTERVAL_S = 60.0  #: under the runner: at most one update a minute, plus the final line


def progress_enabled() -> bool:
    """True unless ``MTLUTILS_QUIET`` or ``TQDM_DISABLE`` is set to a true value."""
    for name in ("MTLUTILS_QUIET", "TQDM_DISABLE"):
        if os.environ.get(name, "").lower() in {"1", "true", "yes"}:
            return False
    return True


def _bar_class() -> Any:
    """tqdm's widget bar in an interactive notebook that can draw one, else its text bar (no warning)."""
    from tqdm.std import tqdm as text_bar

    if os.environ.get(BATCH_ENV):
        return text_bar
    try:
        from IPython import get_ipython

        in_kernel = get_ipython() is not None and "IPKernelApp" in get_ipython().config
        import ipywidgets  # noqa: F401
    except (ImportError, AttributeError):
        return text_bar
    if not in_kernel:
        return text_bar
    from tqdm.notebook import tqdm as widget_bar

    return widget_bar


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar (at most ~1 update per second, so logs stay short)."""
    batch = bool(os.environ.get(BATCH_ENV))
    default_interval = BATCH_MININTERVAL_S if batch else 1.0
    kwargs.setdefault("mininterval", float(os.environ.get("TQDM_MININTERVAL", default_interval)))
    kwargs.setdefault("leave", batch)
    return _bar_class()(iterable, desc=desc, total=total, disable=not progress_enabled(), **kwargs)
