"""Execute the numbered notebooks with papermill and collect their key numbers in ``results.json``.

``results.json`` = ``{"mode": …, "notebooks": {"01_data_preparation": {"seconds": …, "status": "ok"}},
"figures": {…}}``; ``figures`` gathers what notebooks passed to :func:`mtlutils.core.record`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mtlutils.core.io import atomic_write_json
from mtlutils.core.layout import check_mode
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


def run_notebooks(
    mode: str = "default",
    only: list[str] | None = None,
    out_dir: str | Path = "runs/latest",
    parameters: dict[str, Any] | None = None,
    notebook_dir: str | Path = NOTEBOOK_DIR,
    kernel_name: str = "python3",
    show_progress: bool = True,
    timeout_s: int | None = None,
) -> dict:
    """Execute notebooks in order (``cwd`` = their folder); stop at the first failure.

    Writes ``out_dir/NN_name.ipynb`` and ``out_dir/results.json`` (updated after each notebook) and
    returns the results dict. Raises :class:`NotebookFailed` after recording the failure.
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
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "figures").mkdir(exist_ok=True)
    except OSError as err:
        raise ValueError(
            f"cannot write the run folder {out} ({err.strerror}); choose another with --out"
        ) from None
    figures_file = out / "figures.json"
    figures_file.unlink(missing_ok=True)
    results: dict[str, Any] = {"mode": mode, "parameters": parameters, "notebooks": {}, "figures": {}}
    results_file = out / "results.json"
    old_env = {k: os.environ.get(k) for k in (FIGURES_ENV, RUN_DIR_ENV)}
    os.environ[FIGURES_ENV] = str(figures_file.resolve())
    os.environ[RUN_DIR_ENV] = str(out.resolve())
    try:
        for nb in notebooks:
            params = {"MODE": mode} | {k: v for k, v in parameters.items() if k in declared[nb]}
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
            seconds = round(time.perf_counter() - start, 1)
            results["notebooks"][nb.stem] = {"seconds": seconds, "status": status}
            if error:
                results["notebooks"][nb.stem]["error"] = error
            if figures_file.exists():
                results["figures"] = json.loads(figures_file.read_text())
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


def print_summary(results: dict, stream=sys.stdout) -> None:
    """One line per notebook with its status and time."""
    for name, info in results["notebooks"].items():
        print(f"{name:32s} {info['status']:7s} {info['seconds']:7.1f} s", file=stream)
