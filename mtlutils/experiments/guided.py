"""Paper A's experiment, measured: model IDs 1-8 (Table 2) x loss weighting x seeds, on internal and
external test patches, with the comparisons the paper made (paired tests, center probes).

Typical use (notebook 03)::

    targets = guided_targets(table, concepts=("count", "area", "contrast"))
    plan = grid_plan(ids=MODEL_IDS, weightings=("vanilla", "uncertainty"), seeds=range(3))
    out = run_plan(plan, images, targets, table["split"].to_numpy(), TrainConfig())  # train, predict
    summarise(out.runs)                                       # Table 2: mean +- sd over seeds

Names: a training is ``"<variant>-<weighting>-s<seed>"`` and its *variant* (``"id3"``, ``"random"`` …)
with its weighting is a *configuration*; seeds repeat a configuration. The baseline (ID 1, one task) has
no weighting choice and is trained once per seed, labelled ``"vanilla"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mtlutils.evaluation import bootstrap, metrics
from mtlutils.models import ModelConfig
from mtlutils.training import FitResult, Job, TrainConfig, fit_many

MAIN_TASK = "tumour"
ADVERSARIAL_TASKS = ("center",)
# Paper A, Table 2: ID -> extra tasks next to the tumour head (density = nuclei count per mm^2).
MODEL_IDS: dict[int, tuple[str, ...]] = {
    1: (),
    2: ("area",),
    3: ("count",),
    4: ("contrast",),
    5: ("center",),
    6: ("center", "count"),
    7: ("center", "area"),
    8: ("area", "count", "contrast", "center"),
}
WEIGHTINGS = ("vanilla", "uncertainty")
COLLAPSED_AUC = 0.6  # a training whose internal AUC is below this is flagged as a collapsed seed
INTERNAL, EXTERNAL = "test", "external"


def describe_tasks(extra: Sequence[str]) -> str:
    """'baseline' or e.g. '+count, +center (adversarial)'."""
    if not extra:
        return "baseline"
    return ", ".join(f"+{t} (adversarial)" if t in ADVERSARIAL_TASKS else f"+{t}" for t in extra)


def task_kinds(extra: Sequence[str]) -> dict[str, str]:
    """Task name -> kind for the tumour head plus ``extra`` (center: adversarial, others: regression)."""
    kinds = {MAIN_TASK: "binary"}
    kinds.update({t: "adversarial-class" if t in ADVERSARIAL_TASKS else "regression" for t in extra})
    return kinds


def guided_targets(
    table: pd.DataFrame,
    concepts: Sequence[str],
    label: str = "label",
    center: str = "center",
    random_seed: int | None = 0,
) -> dict[str, np.ndarray]:
    """Targets by task name from a concept dataset (``concepts.read_concept_dataset(..., standardise=True)``):
    tumour label (NaN where unknown), each concept (z-scored on the training split, NaN where missing),
    center, and ``random``: one fixed N(0, 1) value per patch (the sanity check's meaningless concept)."""
    needed = [label, center, *concepts]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(
            f"the concept table lacks columns {missing}; run notebook 02 (concept extraction) first"
        )
    targets = {MAIN_TASK: table[label].to_numpy(dtype=float), center: table[center].astype(str).to_numpy()}
    targets.update({c: table[c].to_numpy(dtype=float) for c in concepts})
    if random_seed is not None:
        targets["random"] = np.random.default_rng(random_seed).standard_normal(len(table))
    return targets


def grid_plan(
    ids: Mapping[int, Sequence[str]] | Iterable[int] = MODEL_IDS,
    weightings: Sequence[str] = WEIGHTINGS,
    seeds: Iterable[int] = range(3),
    extra_variants: Mapping[str, Sequence[str]] | None = None,
    prefix: str = "",
) -> pd.DataFrame:
    """One row per training: name, variant, id (NaN for extra variants), tasks (tuple), description,
    weighting, seed. ``ids``: a subset of :data:`MODEL_IDS` (numbers) or a custom {id: extra tasks};
    ``extra_variants``: more named variants, e.g. ``{"random": ("random",)}``."""
    if not isinstance(ids, Mapping):
        unknown = [i for i in ids if i not in MODEL_IDS]
        if unknown:
            raise ValueError(f"model IDs {unknown} unknown; paper A's IDs are {sorted(MODEL_IDS)}")
        ids = {i: MODEL_IDS[i] for i in ids}
    unknown_w = [w for w in weightings if w not in WEIGHTINGS]
    if unknown_w or not weightings:
        raise ValueError(f"weightings {list(weightings)} must be a non-empty subset of {WEIGHTINGS}")
    variants = [(f"id{i}", i, tuple(extra)) for i, extra in ids.items()]
    variants += [(name, np.nan, tuple(extra)) for name, extra in (extra_variants or {}).items()]
    rows = []
    for seed in seeds:
        for variant, model_id, extra in variants:
            for weighting in weightings if extra else ("vanilla",):
                rows.append(
                    dict(
                        name=f"{prefix}{variant}-{weighting}-s{seed}",
                        variant=variant,
                        id=model_id,
                        tasks=extra,
                        description=describe_tasks(extra),
                        weighting=weighting,
                        seed=int(seed),
                    )
                )
    if not rows:
        raise ValueError("the plan is empty: give at least one seed and one model ID")
    return pd.DataFrame(rows)


def _changes(row: Mapping, column: str) -> dict:
    """The dict of config changes in ``row[column]`` (empty when absent or NaN after a concat)."""
    value = row.get(column)
    return dict(value) if isinstance(value, Mapping) else {}


def plan_jobs(plan: pd.DataFrame, config: TrainConfig, model_config: ModelConfig | None = None) -> list[Job]:
    """:class:`~mtlutils.training.Job` s for :func:`~mtlutils.training.fit_many`, one per plan row; a plan's
    optional ``model_changes`` / ``train_changes`` columns (dicts) change the configs for that row."""
    model_config = model_config or ModelConfig()
    jobs = []
    for row in plan.to_dict("records"):
        train = _changes(row, "train_changes")
        train.update(
            weighting=row["weighting"], seed=int(row["seed"]), progress_desc=row["name"], main_task=MAIN_TASK
        )
        jobs.append(
            Job(
                name=row["name"],
                tasks=task_kinds(row["tasks"]),
                config=replace(config, **train),
                model_config=replace(model_config, **_changes(row, "model_changes")),
            )
        )
    return jobs


def predictions(results: Mapping[str, FitResult], images) -> dict[str, np.ndarray]:
    """Tumour probability of every image, per training."""
    return {name: r.predict(images)[MAIN_TASK] for name, r in results.items()}


def _part_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUC and F1 at threshold 0.5 (NaN without both classes)."""
    if y.size == 0 or np.unique(y).size < 2:
        return {"auc": np.nan, "f1": metrics.f1(y, score) if y.size else np.nan}
    return {"auc": metrics.auc(y, score), "f1": metrics.f1(y, score)}


def within_center_auc(y: np.ndarray, score: np.ndarray, centers: np.ndarray) -> float:
    """Mean over centers (with both classes) of the AUC within the center: free of the prevalence
    differences between centers that a pooled AUC rewards."""
    values = [
        metrics.auc(y[centers == c], score[centers == c])
        for c in np.unique(centers)
        if np.unique(y[centers == c]).size == 2
    ]
    return float(np.mean(values)) if values else np.nan


def best_threshold_f1(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) at the threshold that maximises F1 on these very rows: an oracle, to tell a
    shifted threshold from lost ranking."""
    if y.size == 0 or np.unique(y).size < 2:
        return np.nan, np.nan
    grid = np.unique(np.quantile(score, np.linspace(0.01, 0.99, 99)))
    f1s = [metrics.f1(y, score, threshold=t) for t in grid]
    i = int(np.argmax(f1s))
    return float(grid[i]), float(f1s[i])


def evaluate_runs(
    plan: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    split: np.ndarray,
    results: Mapping[str, FitResult] | None = None,
    centers: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per training: the plan's columns plus AUC and F1 (threshold 0.5) on the validation,
    internal test and external patches, the external F1 at its oracle threshold (``ext_f1_best`` at
    ``ext_threshold``), with ``centers`` the within-center internal AUC (``int_auc_within``), and the
    best epoch when ``results`` are given. ``labels``: the labels to evaluate against (true ones when known)."""
    labels = np.asarray(labels, dtype=float)
    split = np.asarray(split).astype(str)
    rows = []
    for row in plan.to_dict("records"):
        score = scores[row["name"]]
        for key, part in (("val", "val"), ("int", INTERNAL), ("ext", EXTERNAL)):
            keep = (split == part) & np.isfinite(labels)
            m = _part_metrics(labels[keep], score[keep])
            row[f"{key}_auc"], row[f"{key}_f1"] = m["auc"], m["f1"]
        ext = (split == EXTERNAL) & np.isfinite(labels)
        row["ext_threshold"], row["ext_f1_best"] = best_threshold_f1(labels[ext], score[ext])
        if centers is not None:
            inside = (split == INTERNAL) & np.isfinite(labels)
            row["int_auc_within"] = within_center_auc(
                labels[inside], score[inside], np.asarray(centers)[inside]
            )
        if results is not None:
            row["best_epoch"] = results[row["name"]].best_epoch
            row["epochs_run"] = len(results[row["name"]].history)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class PlanResult:
    """Everything a plan produced: trained models, tumour probabilities of every image, one row per run."""

    results: dict[str, FitResult]
    scores: dict[str, np.ndarray]
    runs: pd.DataFrame


def run_plan(
    plan: pd.DataFrame,
    images,
    targets: Mapping[str, np.ndarray],
    split: np.ndarray,
    config: TrainConfig,
    model_config: ModelConfig | None = None,
    workers: int | None = None,
    eval_labels: np.ndarray | None = None,
    centers: np.ndarray | None = None,
) -> PlanResult:
    """Train every row of ``plan`` (:func:`~mtlutils.training.fit_many`) on ``targets`` (the annotation
    labels), predict every image, evaluate against ``eval_labels`` (true labels; None: the targets')."""
    results = fit_many(images, targets, split, plan_jobs(plan, config, model_config), workers=workers)
    scores = predictions(results, images)
    labels = targets[MAIN_TASK] if eval_labels is None else eval_labels
    runs = evaluate_runs(plan, scores, labels, split, results, centers)
    return PlanResult(results, scores, runs)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2: one row per configuration (variant x weighting), mean and sd over seeds."""
    keys = ["variant", "id", "description", "weighting"]
    grouped = runs.groupby(keys, sort=False, dropna=False)
    table = grouped.agg(
        seeds=("seed", "nunique"),
        val_auc=("val_auc", "mean"),
        int_auc=("int_auc", "mean"),
        int_auc_sd=("int_auc", "std"),
        int_f1=("int_f1", "mean"),
        ext_auc=("ext_auc", "mean"),
        ext_auc_sd=("ext_auc", "std"),
        ext_f1=("ext_f1", "mean"),
    )
    optional = {c: (c, "mean") for c in ("int_auc_within", "ext_f1_best", "ext_threshold") if c in runs}
    if optional:
        table = table.join(grouped.agg(**optional))
    table["collapsed"] = grouped["int_auc"].agg(lambda a: int((a < COLLAPSED_AUC).sum()))
    return table.reset_index().rename(columns={"description": "tasks"})


def collapsed(runs: pd.DataFrame, threshold: float = COLLAPSED_AUC) -> pd.DataFrame:
    """Trainings whose internal AUC is below ``threshold``: collapsed seeds to show, not to average away."""
    return runs[runs["int_auc"] < threshold]


def best_guided(summary: pd.DataFrame, by: str = "val_auc") -> pd.Series:
    """The guided configuration (not the baseline, not extra variants) with the highest ``by``.

    Selecting on the *validation* AUC keeps the external comparison honest: choosing by the external
    AUC itself would make the best model's gain look larger than it is."""
    guided = summary[summary["id"].notna() & (summary["id"] != 1)]
    if guided.empty:
        raise ValueError("no guided configuration in the summary; include model IDs 2-8 in the plan")
    return guided.loc[guided[by].idxmax()]


def compare_configurations(
    runs: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    split: np.ndarray,
    candidate: tuple[str, str],
    baseline: tuple[str, str] = ("id1", "vanilla"),
    part: str = EXTERNAL,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """AUC of configuration ``candidate`` = (variant, weighting) minus the baseline's on ``part``:
    a paired bootstrap over the same resamples with the AUC averaged over seeds (``p_value``: is the
    difference larger than the test-set (slide) sampling noise? it ignores seed variation), and a
    Wilcoxon signed-rank test pairing the seeds (``wilcoxon_p``: does the method win across trainings?
    NaN with fewer than 2 common seeds; never below ``wilcoxon_floor`` = 2 / 2^n)."""
    split = np.asarray(split).astype(str)
    labels = np.asarray(labels, dtype=float)
    keep = (split == part) & np.isfinite(labels)

    def select(config: tuple[str, str]) -> pd.DataFrame:
        chosen = runs[(runs["variant"] == config[0]) & (runs["weighting"] == config[1])].sort_values("seed")
        if chosen.empty:
            raise ValueError(f"no trainings for configuration {config}; see the plan's variant/weighting")
        return chosen

    a, b = select(candidate), select(baseline)
    stack = lambda chosen: np.stack([scores[n][keep] for n in chosen["name"]])  # noqa: E731
    out = bootstrap.paired_bootstrap(
        labels[keep],
        stack(a),
        stack(b),
        n_boot=n_boot,
        seed=seed,
        groups=None if groups is None else np.asarray(groups)[keep],
    )
    common = sorted(set(a["seed"]) & set(b["seed"]))
    col = {"external": "ext_auc", "test": "int_auc", "val": "val_auc"}.get(part)
    out["wilcoxon_p"] = np.nan
    out["wilcoxon_test"] = "not run (fewer than 2 seeds in common)"
    out["wilcoxon_floor"] = 2.0 / 2 ** len(common) if common else np.nan  # smallest two-sided p possible
    out["n_seeds_paired"] = len(common)
    if col is not None and len(common) >= 2:
        w = bootstrap.wilcoxon_paired(
            a.set_index("seed").loc[common, col].to_numpy(), b.set_index("seed").loc[common, col].to_numpy()
        )
        out["wilcoxon_p"], out["wilcoxon_test"] = w["p_value"], w["test"]
    out.update(candidate_config=candidate, baseline_config=baseline, part=part)
    return out


def histories(results: Mapping[str, FitResult], names: Iterable[str]) -> pd.DataFrame:
    """Per-epoch logs of the named trainings, stacked with a ``run`` column (for curve plots)."""
    frames = [results[n].history.assign(run=n) for n in names]
    if not frames:
        raise ValueError("no trainings named; pick names from the plan")
    return pd.concat(frames, ignore_index=True)


def uncertainty_settling(history: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Final learned s_i of uncertainty-weighted runs against their stationary values s*_i.

    ``history``: :func:`histories` of the runs (columns ``run``, ``log_var.<task>``, ``loss.<task>``,
    ``weight.<task>``); ``kinds``: task -> kind for the tasks to report. s* = log(2 L) for classification
    and log(L) for regression (``balancers.UncertaintyWeighting.stationary_log_var``), L the last epoch's
    mean training loss. Rows: tasks; columns ``s_final``, ``s_star``, ``weight``, ``gap`` = |s - s*|,
    each averaged over runs.
    """
    last = history.groupby("run").tail(1)
    rows = {}
    for task, kind in kinds.items():
        scale = 0.5 if kind == "regression" else 1.0
        rows[task] = {
            "s_final": float(last[f"log_var.{task}"].mean()),
            "s_star": float(np.log(2 * scale * last[f"loss.{task}"]).mean()),
            "weight": float(last[f"weight.{task}"].mean()),
        }
    table = pd.DataFrame(rows).T
    table["gap"] = (table["s_final"] - table["s_star"]).abs()
    return table
