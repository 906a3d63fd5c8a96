"""Your own slides in the notebooks: which cohort a run uses, what its manifest supports, and skip notes.

The rule (notebooks 01-03, parameters ``DATA_DIR``, ``MANIFEST``, ``COHORT``), see :func:`resolve_cohort`:

1. ``MANIFEST`` set: that CSV lists your slides;
2. else ``DATA_DIR/manifest.csv`` exists: that one (``DATA_DIR`` holds your slides and their manifest);
3. else the embedded synthetic cohort.

The cohort's derived data (patches, concepts) always goes to ``DATA_DIR/<COHORT>-<MODE>/``
(:func:`mtlutils.core.layout.cohort_dirs`), where ``COHORT`` defaults to the manifest's folder name
(``"synthetic"`` for the synthetic cohort); notebooks 02 and 03 resolve the same name from the same
parameters, so they find what notebook 01 wrote.

A manifest needs ``slide_id, patient_id, center, split, path``; labels (``annotation``,
``has_tumour``) are optional: without them every tile's label is unknown and a notebook skips, with a
visible note (:func:`skip`), every step that needs labels, several training centers, the ground truth
or the control cohort.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CohortChoice", "Support", "resolve_cohort", "support", "skip", "scaler_split", "stop_unless"]

MANIFEST_NAME = "manifest.csv"
SKIP_PREFIX = "Skipped"  #: every skip note starts with this word (tests look for it)


@dataclass(frozen=True)
class CohortChoice:
    """The cohort of a run: ``name`` (folder stem under ``DATA_DIR``) and the manifest of own slides
    (None for the synthetic cohort)."""

    name: str
    manifest: Path | None

    @property
    def synthetic(self) -> bool:
        return self.manifest is None

    def describe(self) -> str:
        if self.synthetic:
            return f"the embedded synthetic cohort ({self.name!r})"
        return f"your slides, listed in {self.manifest} (cohort {self.name!r})"


def resolve_cohort(
    data_dir: str | os.PathLike, manifest: str | os.PathLike | None = None, cohort: str | None = None
) -> CohortChoice:
    """Which cohort a notebook uses (see the module docstring): ``manifest`` if given, else
    ``data_dir/manifest.csv`` if it exists, else the synthetic cohort. ``cohort`` names its folder;
    None: the manifest's folder name, or ``"synthetic"``."""
    found = None
    if manifest is not None and str(manifest).strip():
        found = Path(manifest).expanduser()
        if not found.is_file():
            raise FileNotFoundError(
                f"MANIFEST={str(manifest)!r} does not exist; give the path of your cohort's CSV"
            )
    elif (Path(data_dir).expanduser() / MANIFEST_NAME).is_file():
        found = Path(data_dir).expanduser() / MANIFEST_NAME
    if cohort is None:
        cohort = "synthetic" if found is None else (found.resolve().parent.name or "own")
    return CohortChoice(name=str(cohort), manifest=found)


@dataclass(frozen=True)
class Support:
    """What a patch table (``index.csv`` or a concepts table) allows: counts of labelled patches per
    class and split, the training centers, the splits present."""

    n_patches: int
    n_labelled: int
    classes: tuple[int, ...]
    train_classes: tuple[int, ...]
    centers: tuple[str, ...]
    train_centers: tuple[str, ...]
    splits: tuple[str, ...]

    @property
    def labels(self) -> bool:
        """Both classes among the labelled patches: label statistics are defined."""
        return len(self.classes) == 2

    @property
    def trainable(self) -> bool:
        """Both classes in the training split: a classifier can be trained."""
        return len(self.train_classes) == 2

    @property
    def several_centers(self) -> bool:
        """At least two training centers: center statistics, an adversary and center probes make sense."""
        return len(self.train_centers) >= 2

    def summary(self) -> str:
        """One Markdown paragraph: what the table holds and which kind of step it allows."""
        unknown = self.n_patches - self.n_labelled
        parts = [
            f"{self.n_patches} patches, {self.n_labelled} labelled ({unknown} with an unknown label)",
            f"classes {list(self.classes) or 'none'}",
            f"{len(self.centers)} center(s), {len(self.train_centers)} in the training split",
            f"splits {list(self.splits)}",
        ]
        missing = [
            what
            for ok, what in (
                (self.labels, "label statistics (both classes needed)"),
                (self.several_centers, "center statistics (two training centers needed)"),
            )
            if not ok
        ]
        tail = f" Steps needing {' and '.join(missing)} are skipped with a note." if missing else ""
        return "This cohort: " + "; ".join(parts) + "." + tail


def support(table: pd.DataFrame) -> Support:
    """:class:`Support` of a patch table with ``label`` (NaN: unknown), ``center`` and ``split``."""
    label = (
        pd.to_numeric(table["label"], errors="coerce")
        if "label" in table
        else pd.Series(np.nan, index=table.index)
    )
    split = table["split"].astype(str) if "split" in table else pd.Series("", index=table.index)
    center = table["center"].astype(str) if "center" in table else pd.Series("", index=table.index)
    known = label.notna()
    train = split == "train"
    return Support(
        n_patches=int(len(table)),
        n_labelled=int(known.sum()),
        classes=tuple(sorted(int(v) for v in label[known].unique())),
        train_classes=tuple(sorted(int(v) for v in label[known & train].unique())),
        centers=tuple(sorted(center.unique())),
        train_centers=tuple(sorted(center[train].unique())),
        splits=tuple(sorted(split.unique())),
    )


def skip(what: str, why: str) -> str:
    """Show (in a notebook: as Markdown, else printed) and return the note ``Skipped: what (why).``"""
    text = f"**{SKIP_PREFIX}: {what}** ({why})."
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return text
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        pass
    print(text.replace("**", ""))
    return text


def scaler_split(patch_dir: str | os.PathLike, preferred: str = "train") -> str:
    """The split to fit the concept z-scores on: ``preferred`` when ``index.csv`` has such patches,
    else its most common split (printed: an unlabeled cohort may have no training split)."""
    from mtlutils.data.index import read_patch_index

    splits = read_patch_index(Path(patch_dir))["split"].astype(str)
    if (splits == preferred).any():
        return preferred
    chosen = str(splits.value_counts().index[0])
    print(f"no {preferred!r} patches in {patch_dir}: concept z-scores are fitted on split {chosen!r}")
    return chosen


def _blank(lines: list[str]) -> list[str]:
    return []


def stop_unless(ok: bool, what: str, why: str) -> bool:
    """End a notebook early, without an error, unless ``ok``: show the skip note and make the kernel
    run every later cell as an empty one (an IPython input transformer), so that papermill finishes the
    notebook normally. To run it again with other parameters, restart the kernel. Returns ``ok``."""
    from IPython import get_ipython

    shell = get_ipython()
    if not ok:
        skip(
            what, why + "; every later cell of this notebook is skipped (restart the kernel to run it again)"
        )
        if shell is not None and _blank not in shell.input_transformers_cleanup:
            shell.input_transformers_cleanup.append(_blank)
    return ok
