"""Shared test fixtures: quiet progress bars, the real sample slide when present, tiny cohorts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MTLUTILS_QUIET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_SLIDE = SHARED_DATA / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def real_slide() -> Path:
    """The CC0 Aperio slide from ``../shared/data``; skip when this checkout has none."""
    if not REAL_SLIDE.exists():
        pytest.skip(
            f"real slide not present ({REAL_SLIDE.name} in ../shared/data); skipping the real-slide path"
        )
    return REAL_SLIDE
