"""Code versions for caches: short SHA-256 digests of the source that computes an artifact.

Every cache key of the package (synthetic cohort, patch files, concepts, bag features, sweep jobs)
holds :func:`code_version` of the modules that compute that artifact, and only those: an edit to the
tiling code rebuilds the patch files, an edit to the plotting code rebuilds nothing.
``code_version()`` without arguments covers the whole package (the notebook runner's fingerprint).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
from pathlib import Path
from types import ModuleType

__all__ = ["code_version", "module_closure", "source_files", "source_hash"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the mtlutils folder
_DIGITS = 12


def _as_path(item: ModuleType | str | os.PathLike) -> Path:
    """The file or folder of a module object, a dotted module name, or a path."""
    if isinstance(item, ModuleType):
        module = item
    elif isinstance(item, str) and not Path(item).exists() and "/" not in item and not item.endswith(".py"):
        module = importlib.import_module(item)
    else:
        path = Path(item).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"code_version: {path} does not exist; give a module or a source path")
        return path
    if module.__file__ is None:
        raise ValueError(f"code_version: module {module.__name__} has no source file")
    path = Path(module.__file__).resolve()
    return path.parent if path.name == "__init__.py" else path


def _imported_modules(name: str) -> set[str]:
    """The mtlutils modules that module ``name`` imports (anywhere in it, lazy imports included)."""
    module = importlib.import_module(name)
    if module.__file__ is None:
        return set()
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    package = name if Path(module.__file__).name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mtlutils")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "mtlutils":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if importlib.util.find_spec(base) and _is_module(full):
                    found.add(full)
                    continue
                owner = getattr(getattr(importlib.import_module(base), alias.name, None), "__module__", None)
                found.add(owner if isinstance(owner, str) and owner.startswith("mtlutils") else base)
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=64)
def module_closure(*names: str) -> tuple[str, ...]:
    """``names`` and every mtlutils module they import, transitively; a package reached through an
    import is left out (its ``__init__`` only re-exports: the names it gives resolve to their modules)."""
    seen: set[str] = set()
    kept: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        module = importlib.import_module(name)
        if name in names or module.__file__ is None or Path(module.__file__).name != "__init__.py":
            kept.add(name)
            todo.extend(_imported_modules(name) - seen)
    return tuple(sorted(kept))


def source_files(*modules_or_paths: ModuleType | str | os.PathLike) -> list[Path]:
    """The ``.py`` files behind modules, dotted names, files or folders (a package: all its files)."""
    files: set[Path] = set()
    for item in modules_or_paths:
        path = _as_path(item)
        files.update(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return sorted(files)


@functools.lru_cache(maxsize=512)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """SHA-256 of one file's bytes (cached while its mtime and size are unchanged)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _label(path: Path) -> str:
    """A location-independent name of a source file (relative to the package, else its name)."""
    try:
        return path.relative_to(_PACKAGE_ROOT.parent).as_posix()
    except ValueError:
        return path.name


def code_version(*modules_or_paths: ModuleType | str | os.PathLike, follow_imports: bool = False) -> str:
    """12 hex digits of SHA-256 over the sources of modules, dotted names, files or folders (none: all
    mtlutils); ``follow_imports`` adds the mtlutils modules that dotted names import (:func:`module_closure`)."""
    modules_or_paths = modules_or_paths or (_PACKAGE_ROOT,)
    if follow_imports:
        names = tuple(m for m in modules_or_paths if isinstance(m, str) and _is_module(m))
        modules_or_paths = (*[m for m in modules_or_paths if m not in names], *module_closure(*names))
    digest = hashlib.sha256()
    for path in source_files(*modules_or_paths):
        stat = path.stat()
        digest.update(f"{_label(path)}\0{_file_digest(str(path), stat.st_mtime_ns, stat.st_size)}\n".encode())
    return digest.hexdigest()[:_DIGITS]


def source_hash(*parts: object) -> str:
    """12 hex digits of SHA-256 over the source of classes/functions and the ``str`` of other values."""
    text = "".join(
        inspect.getsource(p) if inspect.isclass(p) or inspect.isfunction(p) else str(p) for p in parts
    )
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGITS]
