"""Writing files safely: atomic writes (text, JSON, any writer) and writable output folders.

Every file the package writes goes through :func:`atomic_path`: the content is written to a temporary
file in the same folder and renamed over the target only when complete, so a crash never leaves a
half-written file under the final name (and a cache that exists is a cache that is complete).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "UnwritableDirError",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "ensure_writable_dir",
    "is_temp_file",
]

TEMP_MARKER = ".tmp-"


class UnwritableDirError(ValueError):
    """An output folder cannot be created or written to."""


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for the temporary names made by :func:`atomic_path` (left over after a crash)."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARKER in name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success, remove it on error.

    The temporary name keeps the real suffix (``.h5``, ``.tiff``, ...) so writers that look at the
    extension behave the same. The parent folder must exist (see :func:`ensure_writable_dir`).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.stem}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_path: nothing was written to the temporary file for {target}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (keys kept in insertion order); return the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def json_default(value: Any) -> Any:
    """JSON form of NumPy scalars and arrays and of paths (``default=`` of ``json.dumps``)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write a value of type {type(value).__name__} to JSON")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (with parents) and check that a file can be written in it; return it.

    Writability is tested by creating and removing a small file, which also works when running as
    root (where ``os.access`` says yes to everything).
    """
    folder = Path(path).expanduser()
    fix = "choose another output folder or fix its permissions"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UnwritableDirError(f"output folder {folder} exists as a file, not a folder; {fix}") from None
    except NotADirectoryError:
        raise UnwritableDirError(
            f"output folder {folder} cannot be created: a part of its path is a file; {fix}"
        ) from None
    except OSError as exc:
        raise UnwritableDirError(
            f"output folder {folder} cannot be created ({exc.strerror}); {fix}"
        ) from None
    probe = folder / f".write-test{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UnwritableDirError(f"output folder {folder} is not writable ({exc.strerror}); {fix}") from None
    return folder
