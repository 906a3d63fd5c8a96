"""Where each notebook finds and puts data: one folder layout shared by all notebooks.

``DATA_DIR/<cohort>-<mode>/`` holds a cohort (``manifest.csv``, ``slides/`` …) and its derived data
(``patches/``, concept tables, feature caches). The control cohort (no confounder) sits beside it as
``<cohort>-control-<mode>``. Notebooks derive every path from ``DATA_DIR`` and ``MODE`` through
:func:`cohort_dirs`, so notebook 03 reads exactly what notebook 01 wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODES = ("quick", "default", "full")


@dataclass(frozen=True)
class CohortDirs:
    """Folders of one cohort: ``root`` (manifest, slides, annotations) and ``patches``."""

    root: Path
    patches: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of quick/default/full, else raise a one-line error."""
    if mode not in MODES:
        raise ValueError(f"MODE={mode!r} is not one of {', '.join(MODES)}; set MODE to one of them")
    return mode


def cohort_dirs(
    data_dir: str | Path, mode: str, cohort: str = "synthetic", control: bool = False
) -> CohortDirs:
    """Folders for ``cohort`` in ``mode`` under ``data_dir`` (``control=True``: the no-confounder twin)."""
    check_mode(mode)
    name = f"{cohort}-control-{mode}" if control else f"{cohort}-{mode}"
    root = Path(data_dir) / name
    return CohortDirs(root=root, patches=root / "patches")
