"""The project's own files install everything it needs, consistently."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    text = (REPO / "environment.yml").read_text()
    pip_lines = re.findall(r'^\s+- "([^"]+)"', text, flags=re.M)
    listed = {_name(r) for r in pip_lines if not r.startswith("-e")}
    assert listed == wanted, (
        f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"
    )
    assert any(r.startswith("-e .") for r in pip_lines), (
        "environment.yml must install the project itself (-e .)"
    )


def test_installed_packages_satisfy_the_declared_bounds():
    # the venv `make` built must match what pyproject.toml declares (a stale venv or a hand-installed
    # package fails here, not later inside a notebook)
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wrong = []
    for text in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(text)
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            wrong.append(f"{req.name} missing")
            continue
        if not req.specifier.contains(installed.split("+")[0], prereleases=True):
            wrong.append(f"{req.name} {installed} not in {req.specifier}")
    assert not wrong, f"run `make install` again: {wrong}"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    commands = [
        ln for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert commands == ["make test"]
    assert "make test" in (REPO / "README.md").read_text()


def test_cli_entry_point_is_installed():
    exe = shutil.which("mtlutils", path=str(REPO / ".venv" / "bin")) or shutil.which("mtlutils")
    if exe is None:
        pytest.skip("mtlutils console script not on PATH (package not installed with pip -e)")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run" in out.stdout


def test_ruff_lint_is_clean():
    ruff = shutil.which("ruff", path=str(REPO / ".venv" / "bin")) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    out = subprocess.run(
        [ruff, "check", "mtlutils", "tests", "bench"], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-3000:]
