"""What the concepts track: the concept dataset of a patch folder, and its association with labels,
centers, ground truth and stain normalisation."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtlutils.concepts.extract import CONCEPTS_FILE, read_concepts
from mtlutils.concepts.patch import CONCEPTS
from mtlutils.evaluation.metrics import auc

if TYPE_CHECKING:  # pandas is imported lazily: worker processes do not need it
    import pandas as pd

CLASS_NAMES = {0.0: "normal", 1.0: "tumour"}


def read_concept_dataset(patch_dir: str | os.PathLike, standardise: bool = False) -> pd.DataFrame:
    """Concepts of a patch folder joined with its ``index.csv`` (labels, coordinates, slide variables).

    One row per patch, in ``index.csv`` order. Added columns: the index's own (``label``,
    ``patient_id``, ``x_px``, ``y_px``, ``mpp``, ``tumour_fraction`` …; its thumbnail-based
    ``tissue_fraction`` is renamed ``tile_tissue_fraction``, the concepts' full-resolution one stays
    ``tissue_fraction``) and ``tissue`` = "tumour" / "normal" / "unknown" from ``label``.
    """
    import pandas as pd

    from mtlutils.data.index import read_patch_index

    folder = Path(patch_dir).expanduser()
    table = read_concepts(folder, standardise=standardise)
    index = read_patch_index(folder)
    if (
        len(index) != len(table)
        or not (index["file"].astype(str).to_numpy() == table["file"].astype(str).to_numpy()).all()
        or not (index["row"].to_numpy() == table["row"].to_numpy()).all()
    ):
        raise ValueError(
            f"{folder / CONCEPTS_FILE} does not match {folder / 'index.csv'} (tiled again since?); "
            "extract the concepts again (extract_patch_dir_concepts)"
        )
    extra = index.drop(columns=[c for c in index.columns if c in table.columns and c != "tissue_fraction"])
    extra = extra.rename(columns={"tissue_fraction": "tile_tissue_fraction"})
    out = pd.concat([table.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    label = out["label"] if "label" in out.columns else pd.Series(np.nan, index=out.index)
    out["tissue"] = label.map(CLASS_NAMES).fillna("unknown")
    return out


def _concept_list(table: pd.DataFrame, concepts: Sequence[str] | None) -> list[str]:
    names = [c for c in CONCEPTS if c in table.columns] if concepts is None else list(concepts)
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks concept column(s) {missing}; available: {list(table.columns)}")
    if not names:
        raise ValueError("no concept column in the table; pass concepts=[...] or a concepts table")
    return names


def _require_column(table: pd.DataFrame, column: str, what: str) -> None:
    if column not in table.columns:
        raise ValueError(
            f"the table has no {what} column {column!r}; pass its name (columns: {list(table.columns)})"
        )


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """Mann–Whitney AUC of ``x`` for 0/1 labels ``y`` (ties count ½); NaN unless both classes occur."""
    if not (y == 1).any() or not (y == 0).any():
        return math.nan
    return auc(y, x)


def concept_label_association(
    table: pd.DataFrame,
    concepts: Sequence[str] | None = None,
    label: str = "label",
    by: str | None = "center",
) -> pd.DataFrame:
    """How well each concept separates tumour (label 1) from normal (label 0) patches.

    One row per concept: ``n``; ``auc`` (pooled; > 0.5 when the concept is higher in tumour);
    ``separation`` = max(auc, 1 − auc); ``r_pb`` (point-biserial correlation with the label);
    ``p_value`` (two-sided Mann–Whitney U). With ``by`` (e.g. the center): ``auc_<group>`` for every
    group holding both classes and ``auc_within`` = their mean, the separation that a center's mix of
    tumour and normal patches cannot fake. Rows with a missing label or concept are left out.
    """
    import pandas as pd
    from scipy.stats import mannwhitneyu

    names = _concept_list(table, concepts)
    _require_column(table, label, "label")
    if by is not None:
        _require_column(table, by, "group")
    y_all = pd.to_numeric(table[label], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isin(y_all[np.isfinite(y_all)], (0.0, 1.0)).all():
        raise ValueError(f"column {label!r} must hold 0/1 labels (NaN for unlabelled patches)")
    rows = {}
    for name in names:
        x_all = np.asarray(table[name], dtype=np.float64)
        ok = np.isfinite(x_all) & np.isfinite(y_all)
        x, y = x_all[ok], y_all[ok]
        pos, neg = x[y == 1], x[y == 0]
        row: dict[str, float] = {"n": int(ok.sum()), "auc": _auc(x, y)}
        row["separation"] = max(row["auc"], 1 - row["auc"]) if math.isfinite(row["auc"]) else math.nan
        varies = len(pos) and len(neg) and float(np.std(x)) > 0
        row["r_pb"] = float(np.corrcoef(x, y)[0, 1]) if varies else math.nan
        row["p_value"] = float(mannwhitneyu(pos, neg).pvalue) if varies else math.nan
        if by is not None:
            groups = table[by].to_numpy()[ok]
            within = []
            for group in pd.unique(groups):
                inside = groups == group
                value = _auc(x[inside], y[inside])
                row[f"auc_{group}"] = value
                if math.isfinite(value):
                    within.append(value)
            row["auc_within"] = float(np.mean(within)) if within else math.nan
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "concept"
    return out


def _center_statistics(x: np.ndarray, groups: np.ndarray) -> tuple[float, float, float, int, int] | None:
    """(SS between, SS total, Kruskal–Wallis H, df, n) of one stratum; None with < 2 groups or no spread."""
    import pandas as pd
    from scipy.stats import kruskal

    present = pd.unique(groups)
    if len(present) < 2 or len(x) < 3 or not float(np.ptp(x)) > 0:
        return None
    mean = x.mean()
    ss_total = float(((x - mean) ** 2).sum())
    ss_between = float(sum((groups == g).sum() * (x[groups == g].mean() - mean) ** 2 for g in present))
    h = float(kruskal(*[x[groups == g] for g in present]).statistic)
    return ss_between, ss_total, h, len(present) - 1, len(x)


def concept_center_association(
    table: pd.DataFrame,
    concepts: Sequence[str] | None = None,
    group: str = "center",
    within: str | None = None,
) -> pd.DataFrame:
    """How much each concept tracks the acquisition center (or any other grouping).

    One row per concept: ``n``; ``eta2`` = SS_between / SS_total of a one-way ANOVA (share of the
    variance explained by the center, 0–1); Kruskal–Wallis ``kw_h``, ``kw_df``, ``p_value`` and its
    rank effect size ``epsilon2`` = H / (n − 1) (0–1, robust to outliers). With ``within`` (e.g. the
    label) every statistic is computed inside each stratum and pooled: eta² = Σ SS_between / Σ
    SS_total, H and df summed (independent strata: H ~ χ²(Σ df)), ε² averaged weighted by n. So a
    center with more tumour does not look different just because tumour differs from normal.
    """
    import pandas as pd
    from scipy.stats import chi2

    names = _concept_list(table, concepts)
    _require_column(table, group, "group")
    if within is not None:
        _require_column(table, within, "stratum")
    strata = np.zeros(len(table)) if within is None else table[within].to_numpy()
    groups_all = table[group].to_numpy()
    rows = {}
    for name in names:
        x_all = np.asarray(table[name], dtype=np.float64)
        ok = np.isfinite(x_all) & pd.notna(groups_all) & pd.notna(strata)
        parts = []
        for stratum in pd.unique(strata[ok]):
            inside = ok & (strata == stratum)
            stats = _center_statistics(x_all[inside], groups_all[inside])
            if stats is not None:
                parts.append(stats)
        row: dict[str, float] = {"n": int(ok.sum())}
        if parts:
            ss_b, ss_t, h, df, n = (np.array(v, dtype=np.float64) for v in zip(*parts, strict=True))
            row.update(
                eta2=float(ss_b.sum() / ss_t.sum()),
                kw_h=float(h.sum()),
                kw_df=int(df.sum()),
                p_value=float(chi2.sf(h.sum(), df.sum())),
                epsilon2=float((n * h / (n - 1)).sum() / n.sum()),
            )
        else:
            row.update(eta2=math.nan, kw_h=math.nan, kw_df=0, p_value=math.nan, epsilon2=math.nan)
        rows[name] = row
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "concept"
    return out


def ground_truth_agreement(
    measured: pd.DataFrame,
    truth: pd.DataFrame,
    pairs: Mapping[str, str] | None = None,
    by: str | None = "center",
) -> pd.DataFrame:
    """Spearman correlation between measured concepts and the generator's ground truth.

    ``measured`` and ``truth`` are row-aligned (same length; e.g. ``read_concept_dataset`` and
    ``synthetic.patch_dir_ground_truth`` on the same folder). ``pairs``: measured column → truth column
    (default: count, area, area_cv to the same names). Returns one row per (concept, group) with
    ``n``, ``spearman`` and ``median_ratio`` (median of measured / true: a bias of the measurement),
    group ``"all"`` pooling every row, then one per value of ``by``. Rows missing either value are
    left out.
    """
    import pandas as pd
    from scipy.stats import spearmanr

    if len(measured) != len(truth):
        raise ValueError(
            f"measured ({len(measured)} rows) and truth ({len(truth)} rows) must be row-aligned; "
            "select the same patches in both"
        )
    pairs = dict(pairs or {"count": "count", "area": "area", "area_cv": "area_cv"})
    for m_col, t_col in pairs.items():
        _require_column(measured, m_col, "measured")
        _require_column(truth, t_col, "ground-truth")
    groups = None
    if by is not None:
        _require_column(measured, by, "group")
        groups = measured[by].to_numpy()
    rows = []
    for m_col, t_col in pairs.items():
        m_all = np.asarray(measured[m_col], dtype=np.float64)
        t_all = np.asarray(truth[t_col], dtype=np.float64)
        ok = np.isfinite(m_all) & np.isfinite(t_all)
        selections = [("all", ok)]
        if groups is not None:
            selections += [(g, ok & (groups == g)) for g in pd.unique(groups)]
        for name, sel in selections:
            m, t = m_all[sel], t_all[sel]
            enough = len(m) >= 3 and np.ptp(m) > 0 and np.ptp(t) > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.median(m[t != 0] / t[t != 0])) if (t != 0).any() else math.nan
            rows.append(
                {
                    "concept": m_col,
                    "truth": t_col,
                    "group": str(name),
                    "n": int(sel.sum()),
                    "spearman": float(spearmanr(m, t).statistic) if enough else math.nan,
                    "median_ratio": ratio,
                }
            )
    return pd.DataFrame(rows)


def normalisation_effect(
    tables: Mapping[str, pd.DataFrame],
    concepts: Sequence[str] | None = None,
    reference: str = "none",
    group: str = "center",
    within: str | None = "label",
) -> pd.DataFrame:
    """What stain normalisation does to the concepts of the same patches.

    ``tables``: method name → concepts table of the same patches in the same order (``reference``
    being the unnormalised one), each with the ``group`` (and ``within``) columns. One row per
    (method, concept): ``spearman`` with the reference values (1 = ranking unchanged),
    ``median_change`` (median of value / reference value − 1), and the center association
    (:func:`concept_center_association` ``eta2`` and ``epsilon2``, stratified by ``within``).
    """
    import pandas as pd
    from scipy.stats import spearmanr

    if reference not in tables:
        raise ValueError(f"reference={reference!r} is not one of the methods {list(tables)}")
    base = tables[reference]
    names = _concept_list(base, concepts)
    rows = []
    for method, table in tables.items():
        if len(table) != len(base):
            raise ValueError(
                f"tables[{method!r}] has {len(table)} rows, the reference {len(base)}: pass the same patches"
            )
        association = concept_center_association(table, names, group=group, within=within)
        for name in names:
            a = np.asarray(base[name], dtype=np.float64)
            b = np.asarray(table[name], dtype=np.float64)
            ok = np.isfinite(a) & np.isfinite(b)
            enough = ok.sum() >= 3 and np.ptp(a[ok]) > 0 and np.ptp(b[ok]) > 0
            nonzero = ok & (a != 0)
            rows.append(
                {
                    "method": method,
                    "concept": name,
                    "spearman": float(spearmanr(a[ok], b[ok]).statistic) if enough else math.nan,
                    "median_change": float(np.median(b[nonzero] / a[nonzero] - 1))
                    if nonzero.any()
                    else math.nan,
                    "eta2": association.loc[name, "eta2"],
                    "epsilon2": association.loc[name, "epsilon2"],
                }
            )
    return pd.DataFrame(rows)
