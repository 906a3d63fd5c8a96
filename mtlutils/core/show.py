"""Show the source of the piece being taught (a function, class or method) in the notebook, highlighted."""

from __future__ import annotations

import inspect
import textwrap
from typing import Any


def source(obj: Any) -> str:
    """The source text of ``obj`` (function, class, method or module), dedented."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as exc:
        raise ValueError(f"show: no source for {obj!r} ({exc}); pass a function, class or module") from None


def show(obj: Any, lines: tuple[int, int] | None = None) -> Any:
    """Display the source of ``obj`` syntax-highlighted (a plain print outside Jupyter).

    ``lines=(first, last)``: only those lines (1-based, inclusive) of its source, for long functions.
    Returns the display object (or the text), so a notebook cell can also end with ``show(f)``.
    """
    text = source(obj)
    if lines is not None:
        first, last = lines
        text = "\n".join(text.splitlines()[first - 1 : last]) + "\n"
    try:
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:  # pragma: no cover - IPython ships with the notebook dependencies
        print(text)
        return text
    if get_ipython() is None:
        print(text)
        return text
    code = Code(text, language="python")
    display(code)
    return None
