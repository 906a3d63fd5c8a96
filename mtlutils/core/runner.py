"""Execute the numbered notebooks with papermill and collect their key numbers in ``results.json``.

``results.json`` = ``{"mode": …, "notebooks": {"01_data_preparation": {"seconds": …, "status": "ok", …}},
"figures": {…}}``; ``figures`` gathers what notebooks passed to :func:`mtlutils.core.record`.

Resuming: a notebook is skipped (``"skipped": true``, its figures and seconds kept) when the run folder
already holds it executed with status ok, the same mode and parameters, the same code fingerprint
(:func:`notebook_fingerprint`: its cells + every mtlutils source) and after the same executions of the
earlier notebooks (``after``: their ``run_id``); so once one notebook reruns, every later one reruns too.
``fresh=True`` (``mtlutils run --fresh``) reruns everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from mtlutils.core.io import UnwritableDirError, atomic_write_json, ensure_writable_dir, json_default
from mtlutils.core.layout import check_mode
from mtlutils.core.provenance import code_version
from mtlutils.core.record import FIGURES_ENV

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
RUN_DIR_ENV = "MTLUTILS_RUN_DIR"  #: the run folder, set while notebooks run (figures are saved there)


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell and the exception."""


def list_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    found = sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {notebook_dir}")
    return found


def select_notebooks(only: list[str] | None, notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Notebooks whose number or name is in ``only`` (all when ``only`` is empty)."""
    notebooks = list_notebooks(notebook_dir)
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem == key or nb.stem.split("_")[0] == key for key in only)]
    unknown = [
        key for key in only if not any(nb.stem == key or nb.stem.split("_")[0] == key for nb in notebooks)
    ]
    if unknown:
        names = ", ".join(nb.stem for nb in notebooks)
        raise ValueError(f"--only {' '.join(unknown)}: no such notebook; choose from {names}")
    return chosen


def parse_value(text: str) -> Any:
    """Parse a ``-p NAME VALUE`` value: int, float, true/false, none, a JSON list/dict, else a string."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if lowered in {"none", "null"}:
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.strip().startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"-p value {text!r} looks like JSON but does not parse ({err.msg})") from None
    return text


def notebook_parameters(path: Path) -> set[str]:
    """Names declared in the notebook's ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def _failure_message(nb: Path, err: Exception) -> str:
    cell = getattr(err, "exec_count", None)
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    where = f"cell [{cell}]" if cell is not None else "a cell"
    return f"{nb.name} failed in {where}: {ename}: {evalue}"


def notebook_fingerprint(path: Path, package_version: str | None = None) -> str:
    """Hash of the notebook's cells (type + source, not outputs) and of the mtlutils sources."""
    import nbformat

    cells = [(c.cell_type, c.source) for c in nbformat.read(str(path), as_version=4).cells]
    digest = hashlib.sha256((package_version or code_version()).encode())
    digest.update(json.dumps(cells).encode())
    return digest.hexdigest()[:16]


def _load_previous(results_file: Path) -> dict[str, Any]:
    """The run folder's earlier ``results.json`` (empty when missing or unreadable)."""
    try:
        previous = json.loads(results_file.read_text())
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def _own_figures(figures: dict[str, Any], nb: Path) -> dict[str, Any]:
    """The figures a notebook recorded (keys start with its number, e.g. ``"01."``)."""
    prefix = nb.stem.split("_")[0] + "."
    return {k: v for k, v in figures.items() if k.startswith(prefix)}


def _unchanged(previous: dict[str, Any] | None, wanted: dict[str, Any], executed: Path) -> bool:
    """True when ``previous`` ran ok with exactly the ``wanted`` mode, parameters, code and upstream."""
    if not isinstance(previous, dict) or previous.get("status") != "ok" or not executed.is_file():
        return False
    return all(previous.get(key) == value for key, value in wanted.items())


def _prepare_run_dir(out: Path) -> None:
    """Create the run folder and ``figures/``; a one-line error when they cannot be written."""
    try:
        ensure_writable_dir(out)
        ensure_writable_dir(out / "figures")
    except UnwritableDirError as err:
        raise UnwritableDirError(f"cannot write the run folder {out}: {err} (--out DIR)") from None


def run_notebooks(
    mode: str = "default",
    only: list[str] | None = None,
    out_dir: str | Path = "runs/latest",
    parameters: dict[str, Any] | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
    kernel_name: str = "python3",
    show_progress: bool = True,
    timeout_s: int | None = None,
    fresh: bool = False,
) -> dict:
    """Execute notebooks in order (``cwd`` = their folder), skipping unchanged ones; stop at the first failure.

    Writes ``out_dir/NN_name.ipynb`` and ``out_dir/results.json`` (updated after each notebook) and
    returns the results dict. Raises :class:`NotebookFailed` after recording the failure. Unless
    ``fresh``, notebooks already run ok with the same inputs are skipped (see the module docstring).
    """
    import papermill

    check_mode(mode)
    notebook_dir = Path(notebook_dir)
    notebooks = select_notebooks(only, notebook_dir)
    parameters = dict(parameters or {})
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    unknown = sorted(set(parameters) - set().union(*declared.values()))
    if unknown:
        raise ValueError(
            f"-p {', '.join(unknown)}: not a parameter of the selected notebooks (valid: "
            f"{', '.join(sorted(set().union(*declared.values())))}); see each notebook's parameters cell"
        )
    out = Path(out_dir)
    _prepare_run_dir(out)
    results_file = out / "results.json"
    previous = {} if fresh else _load_previous(results_file)
    old_entries = previous.get("notebooks") if isinstance(previous.get("notebooks"), dict) else {}
    old_figures = previous.get("figures") if isinstance(previous.get("figures"), dict) else {}
    figures_file = out / "figures.json"
    figures_file.unlink(missing_ok=True)
    results: dict[str, Any] = {"mode": mode, "parameters": parameters, "notebooks": {}, "figures": {}}
    kept: dict[str, Any] = {}  # figures of skipped notebooks
    package_version = code_version()
    old_env = {k: os.environ.get(k) for k in (FIGURES_ENV, RUN_DIR_ENV)}
    os.environ[FIGURES_ENV] = str(figures_file.resolve())
    os.environ[RUN_DIR_ENV] = str(out.resolve())
    try:
        for nb in notebooks:
            params = {"MODE": mode} | {k: v for k, v in parameters.items() if k in declared[nb]}
            wanted = {
                "mode": mode,
                "parameters": json.loads(json.dumps(params, default=json_default)),
                "fingerprint": notebook_fingerprint(nb, package_version),
                "after": {name: info.get("run_id") for name, info in results["notebooks"].items()},
            }
            previous_entry = old_entries.get(nb.stem)
            if _unchanged(previous_entry, wanted, out / nb.name):
                results["notebooks"][nb.stem] = dict(previous_entry) | {"skipped": True}
                kept |= _own_figures(old_figures, nb)
                results["figures"] = dict(kept)
                atomic_write_json(results_file, results, indent=1)
                continue
            start = time.perf_counter()
            status, error = "ok", None
            try:
                papermill.execute_notebook(
                    str(nb),
                    str(out / nb.name),
                    parameters=params,
                    kernel_name=kernel_name,
                    cwd=str(notebook_dir),
                    progress_bar=show_progress,
                    execution_timeout=timeout_s,
                )
            except Exception as err:  # papermill wraps kernel errors; keep the message short
                status, error = "failed", _failure_message(nb, err)
            entry: dict[str, Any] = {"seconds": round(time.perf_counter() - start, 1), "status": status}
            if error:
                entry["error"] = error
            results["notebooks"][nb.stem] = entry | wanted | {"run_id": secrets.token_hex(6)}
            fresh_figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
            results["figures"] = kept | fresh_figures
            atomic_write_json(results_file, results, indent=1)
            if error:
                raise NotebookFailed(f"{error} (executed notebook: {out / nb.name})")
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return results


def print_summary(results: dict, stream: TextIO | None = None) -> None:
    """One line per notebook with its status and time (skipped ones: the time of the run they kept)."""
    stream = stream or sys.stdout
    for name, info in results["notebooks"].items():
        if info.get("skipped"):
            print(f"{name:32s} skipped (unchanged; ran in {info['seconds']:.1f} s before)", file=stream)
        else:
            print(f"{name:32s} {info['status']:7s} {info['seconds']:7.1f} s", file=stream)
