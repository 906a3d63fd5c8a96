"""A run's ``results.json`` as text: the README's measured block, and two runs compared side by side."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS_FILE = "results.json"
BLOCK_START = "<!-- run-summary:start -->"
BLOCK_END = "<!-- run-summary:end -->"


def load_results(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``run_dir/results.json`` (written by ``mtlutils run``), or a one-line error naming the path."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; run the tutorial first (mtlutils run --out {run_dir})"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}); run the tutorial again") from None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists as ``{"a.b[0].c": leaf}``; list rows that carry an ``id`` or ``weighting`` keep it."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        out = {}
        for i, row in enumerate(value):
            name = "/".join(
                str(row[k]) for k in ("id", "weighting", "grad") if k in row and row[k] is not None
            )
            out.update(flatten({k: v for k, v in row.items()}, f"{prefix}[{name or i}]"))
        return out
    return {prefix: value}


def compare(a: Mapping[str, Any], b: Mapping[str, Any], atol: float = 0.0) -> pd.DataFrame:
    """The recorded figures of two runs side by side: ``key, a, b, difference`` (numbers) for every key
    present in either run whose values differ by more than ``atol`` (text values: when unequal)."""
    fa, fb = flatten(a.get("figures", {})), flatten(b.get("figures", {}))
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        if numeric:
            diff = float(vb) - float(va)
            if abs(diff) > atol or (math.isnan(diff) and not (math.isnan(va) and math.isnan(vb))):
                rows.append({"key": key, "a": va, "b": vb, "difference": diff})
        elif va != vb:
            rows.append({"key": key, "a": va, "b": vb, "difference": None})
    return pd.DataFrame(rows, columns=["key", "a", "b", "difference"])


def time_table(results: Mapping[str, Any]) -> str:
    """Markdown rows ``| notebook | status | seconds |`` of one run."""
    lines = ["| notebook | status | seconds |", "|---|---|---|"]
    for name, info in results.get("notebooks", {}).items():
        lines.append(f"| `{name}` | {info.get('status', '?')} | {info.get('seconds', float('nan')):.0f} |")
    total = sum(float(i.get("seconds", 0)) for i in results.get("notebooks", {}).values())
    lines.append(f"| all | | {total:.0f} |")
    return "\n".join(lines)


def figure_lines(results: Mapping[str, Any], keys: Mapping[str, str]) -> str:
    """One markdown bullet per ``keys`` entry (``label: flattened key or regex``) found in the run."""
    flat = flatten(results.get("figures", {}))
    lines = []
    for label, pattern in keys.items():
        hits = {k: v for k, v in flat.items() if re.fullmatch(pattern, k)}
        if not hits:
            continue
        shown = ", ".join(f"{k.split('.', 1)[-1]} {_fmt(v)}" for k, v in hits.items())
        lines.append(f"- **{label}**: {shown}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def replace_block(text: str, block: str, start: str = BLOCK_START, end: str = BLOCK_END) -> str:
    """``text`` with the part between the ``start`` and ``end`` markers replaced by ``block``."""
    if start not in text or end not in text:
        raise ValueError(f"the README has no {start} … {end} markers to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block.strip()}\n{end}{tail}"


def copy_key_figures(run_dir: str | os.PathLike, dest: str | os.PathLike, readme: str | os.PathLike) -> str:
    """Copy the run's :data:`KEY_FIGURES` PNGs into ``dest`` (atomically) and return the README's
    markdown for them, with paths relative to ``readme``'s folder; a missing figure is a one-line error."""
    from mtlutils.core.io import atomic_path

    source, dest = Path(run_dir) / "figures", Path(dest)
    missing = [name for name in KEY_FIGURES if not (source / f"{name}.png").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source} lacks {', '.join(missing)}.png; run the whole tutorial into {run_dir}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, caption in KEY_FIGURES.items():
        with atomic_path(dest / f"{name}.png") as tmp:
            tmp.write_bytes((source / f"{name}.png").read_bytes())
        rel = os.path.relpath((dest / f"{name}.png").resolve(), Path(readme).resolve().parent)
        lines.append(f"**{caption}**\n\n![{caption}]({Path(rel).as_posix()})\n")
    return "\n".join(lines)


#: the three figures the README shows (file stem in RUN_DIR/figures -> caption)
KEY_FIGURES = {
    "01_card": "01 · The cohort card: how hard the task is, measured from the generator's truth before any model",
    "03_table2_auc": "03 · Paper A's Table 2 measured: internal and external AUC of every configuration, per seed",
    "05_slide_maps": "05 · A MIL model's [cls] attention over a slide beside the true lymphocyte density",
}
KEY_START, KEY_END = "<!-- key-figures:start -->", "<!-- key-figures:end -->"


#: what the README's "What the default run measured" block shows: label -> key pattern (regex)
README_KEYS = {
    "01 cohort": r"01\.(n_slides|n_patches|generator_hash)",
    "01 cohort card (pre-registered bands in the card table)": r"01\.card\..*",
    "01 confounder (center alone ranks tumour above normal, AUC)": r"01\.confounding\.(confounded|control)\.label_from_center_auc",
    "02 concepts vs the generator's truth (Spearman, held-out slides)": r"02\.gt_spearman\.(count|area)",
    "03 baseline (ID 1) AUC": r"03\.table\[1(\.0)?/vanilla\]\.(int_auc|int_auc_within|ext_auc)",
    "03 best guided configuration (chosen on validation) vs baseline, external": r"03\.best_(config|ext_gain|ext_p)",
    "03 center probe (linear, balanced accuracy)": r"03\.center_probe\..*\.acc",
    "03 probe floors": r"03\.center_floors\..*",
    "03 control cohort gain": r"03\.control_gain",
    "04 bag card (biomarker AUC from the true TME score)": r"04\.card\.auc_tme",
    "04 baseline AUROC (internal CV, external)": r"04\.baseline_(auroc|ext_auroc)",
    "04 best method (internal CV) vs baseline, external": r"04\.best_(method|ext_gain|ext_p)",
    "04 Friedman test across methods": r"04\.friedman_p",
    "05 count from the shared layer (held-out R²)": r"05\.probe_r2\..*\.shared\.count",
    "05 fresh center probe and the adversary's own head": r"05\.center_(probe|head)_acc\..*",
    "05 silhouette by class ({model: s}; MIL [cls] beside the CNNs' shared layer)": r"05\.silhouette\..*",
    "05 silhouette by center": r"05\.silhouette_center\..*",
    "05 TME score from the MIL [cls] embedding (held-out R², with the random control)": r"05\.mil_probe_r2\..*",
    "05 MIL [cls] attention vs the true lymphocyte density (Spearman per slide)": r"05\.attention_truth_spearman\.(median|q25|q75|share_positive|n_slides)",
}


def readme_block(results: Mapping[str, Any], machine: str) -> str:
    """The README's measured block of one run: its times and key figures, with the machine named."""
    mode = results.get("mode", "?")
    return (
        f"Measured by `mtlutils summary` from one {mode}-mode run ({machine}); regenerate with "
        f"`mtlutils summary RUN_DIR --readme README.md`.\n\n{time_table(results)}\n\n"
        f"{figure_lines(results, README_KEYS)}\n"
    )
