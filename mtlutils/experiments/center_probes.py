"""Does an adversary remove the center? Adversary variants of model ID 5, and fresh probes of their features.

Typical use (notebook 03)::

    adv_plan = adversary_plan(seeds)                       # confusion, MLP x 3 + k steps, label-conditional
    adv = guided.run_plan(adv_plan, images, targets, split, config)
    rows = probe_rows(split)                               # slides the CNN never trained on
    per_run, table = probe_models(models, results, images, centers, slides, true_labels, rows)

Probe rows: the *validation* and *internal test* slides of the training centers. No gradient step ever
used them (validation only chose the early-stopping epoch); the external center is left out because no
adversary was trained to hide it (a probe would find it by its unseen stain).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from mtlutils.core.parallel import parallel_map
from mtlutils.evaluation import center_probe as cp
from mtlutils.evaluation.confounding import colour_features
from mtlutils.models import AdversaryConfig
from mtlutils.training import FitResult, embed, predict

PROBE_SPLITS = ("val", "test")
#: adversary variants of model ID 5 next to paper A's linear reversal: (head config, TrainConfig changes)
ADVERSARIES: dict[str, tuple[AdversaryConfig, dict]] = {
    "confusion": (AdversaryConfig("confusion"), {}),
    "mlp3_k3": (
        AdversaryConfig(kind="mlp", n_heads=3),
        {"adversary_steps": 3, "adversary_reset_every": 3},
    ),
    "conditional": (AdversaryConfig(conditional=True), {}),
}


def adversary_plan(seeds: Iterable[int], variants: Sequence[str] = tuple(ADVERSARIES)) -> pd.DataFrame:
    """Plan rows (as :func:`~mtlutils.experiments.guided.grid_plan`) for ID 5 with each adversary
    variant, vanilla weighting; ``model_changes`` / ``train_changes`` hold what differs from the defaults."""
    rows = []
    for seed in seeds:
        for name in variants:
            head, train = ADVERSARIES[name]
            rows.append(
                dict(
                    name=f"id5-{name}-vanilla-s{seed}",
                    variant=f"id5-{name}",
                    id=np.nan,
                    tasks=("center",),
                    description=f"+center ({head.label}"
                    + (", k = 3 head steps, reset / 3 epochs)" if train else ")"),
                    weighting="vanilla",
                    seed=int(seed),
                    model_changes={"adversary": head},
                    train_changes=dict(train),
                )
            )
    return pd.DataFrame(rows)


def probe_rows(split: np.ndarray, splits: Sequence[str] = PROBE_SPLITS) -> np.ndarray:
    """Indices of the rows a probe may use: slides the CNN never trained on (see the module docstring)."""
    return np.flatnonzero(np.isin(np.asarray(split).astype(str), splits))


def head_predictions(result: FitResult, images, labels: np.ndarray, centers: np.ndarray) -> np.ndarray | None:
    """The model's own center head's predicted center (names) on ``images`` (a label-conditional head is
    given the true label); None without a center head."""
    if "center" not in result.model.tasks:
        return None
    condition = torch.as_tensor(np.where(np.isfinite(labels), labels, -1)).long()
    if result.model.heads["center"].config.conditional:
        model = result.model.eval()
        feats = embed(model, images, layers=("shared",))["shared"]
        with torch.no_grad():
            logits = model.heads["center"](torch.as_tensor(feats), condition)
        codes = logits.argmax(1).numpy()
    else:
        codes = predict(result.model, images)["center"].argmax(1)
    return np.asarray(result.classes["center"], dtype=object)[codes].astype(str)


def _probe_one(result: FitResult, images, centers, slides, labels, seed: int) -> dict[str, np.ndarray]:
    """Out-of-fold center predictions (codes) of one training's shared layer: linear, MLP, within each
    label value, shuffled-by-slide control; and the model's own head."""
    features = embed(result.model, images, layers=("shared",))["shared"]
    _, codes = np.unique(centers, return_inverse=True)
    out = {"width": np.array(features.shape[1])}
    for kind in cp.PROBE_KINDS:
        out[kind] = cp.out_of_fold(features, codes, slides, kind, seed=seed)
    for value in (0, 1):
        rows = labels == value
        within = np.full(codes.size, -1)
        if np.unique(codes[rows]).size >= 2 and np.unique(slides[rows]).size >= 2:
            within[rows] = cp.out_of_fold(features[rows], codes[rows], slides[rows], seed=seed)
        out[f"within_{value}"] = within
    _, shuffled = np.unique(cp.shuffle_by_slide(centers, slides, seed), return_inverse=True)
    out["shuffled"] = cp.out_of_fold(features, shuffled, slides, seed=seed)
    out["shuffled_codes"] = shuffled
    head = head_predictions(result, images, labels, centers)
    if head is not None:
        out["head"] = np.searchsorted(np.unique(centers), head)
    return out


def _score(codes, preds, slides, n_boot, seed, prefix: str) -> dict[str, float]:
    s = cp.score_predictions(codes, np.stack(preds), slides, n_boot, seed)
    return {f"{prefix}": s["acc"], f"{prefix}_low": s["low"], f"{prefix}_high": s["high"]}


def _within(codes, preds, labels, slides, value, n_boot, seed) -> dict[str, float]:
    rows = labels == value
    if np.unique(codes[rows]).size < 2 or (preds[0][rows] < 0).all():
        return {f"within_{value}": np.nan}
    return _score(codes[rows], [p[rows] for p in preds], slides[rows], n_boot, seed, f"within_{value}")


def floors(images, centers, slides, labels, n_boot: int = 200, seed: int = 0) -> dict[str, dict]:
    """Chance 1/K, the label-only floor (a probe given only the true tumour label) and the positive
    control (the probe on six colour statistics of the raw patches), each with its slide-bootstrap CI."""
    label_only = cp.center_probe(cp.one_hot(labels), centers, slides, n_boot=n_boot, seed=seed)
    colour = colour_features(np.asarray(images.permute(0, 2, 3, 1) if hasattr(images, "permute") else images))
    return {
        "chance": {"acc": 1.0 / np.unique(centers).size},
        "label_only": label_only,
        "colour": cp.center_probe(colour, centers, slides, n_boot=n_boot, seed=seed),
    }


def probe_models(
    models: Mapping[str, Sequence[str]],
    results: Mapping[str, FitResult],
    images,
    centers: np.ndarray,
    slides: np.ndarray,
    labels: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per model (``{label: training names (seeds)}``): balanced accuracy of fresh linear and MLP
    probes of the shared layer, within normal (``within_0``) and tumour (``within_1``) patches, the
    shuffled-by-slide control and the model's own head (``head``), each averaged over seeds with a
    slide-bootstrap CI (``*_low``, ``*_high``); ``width``: the probed layer's real width. ``images``,
    ``centers``, ``slides`` and ``labels`` (true 0/1) are the probe rows only."""
    centers, slides = np.asarray(centers).astype(str), np.asarray(slides)
    labels = np.asarray(labels, dtype=float)
    names = [n for group in models.values() for n in group]
    tasks = [(results[n], images, centers, slides, labels, seed) for n in names]
    probed = dict(zip(names, parallel_map(_probe_one, tasks, workers=workers, desc="probes"), strict=True))
    _, codes = np.unique(centers, return_inverse=True)
    rows = []
    for label, group in models.items():
        runs = [probed[n] for n in group]
        row: dict = {"model": label, "seeds": len(group), "width": int(runs[0]["width"])}
        for key in (*cp.PROBE_KINDS, "head"):
            if key in runs[0]:
                row.update(_score(codes, [r[key] for r in runs], slides, n_boot, seed, key))
        for value in (0, 1):
            row.update(
                _within(codes, [r[f"within_{value}"] for r in runs], labels, slides, value, n_boot, seed)
            )
        shuffled = [
            cp.score_predictions(r["shuffled_codes"], r["shuffled"], slides, 1, seed)["acc"] for r in runs
        ]
        row["shuffled"] = float(np.mean(shuffled))
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def probe_sentences(
    probe_table: pd.DataFrame, floors: Mapping[str, Mapping[str, float]], baseline: str
) -> list[str]:
    """One markdown line per probed model: its linear and MLP balanced accuracy placed against the
    label-only floor (CI entirely below, above, or overlapping), its own head against chance, then the
    negative control and the adversaries whose CI lies entirely below the ``baseline`` row's."""
    floor, chance = floors["label_only"]["acc"], floors["chance"]["acc"]
    lines = []
    for model, r in probe_table.iterrows():
        if r.linear_high < floor:
            where = "below the label-only floor"
        elif r.linear_low > floor:
            where = "above the label-only floor"
        else:
            where = "not distinguishable from the label-only floor"
        head = ""
        if np.isfinite(r["head"]):
            fooled = " (below chance: the head is fooled, not blind)" if r["head"] < chance else ""
            head = f"; its own head {r['head']:.3f}{fooled}"
        lines.append(
            f"- **{model}**: linear {r.linear:.3f} (CI {r.linear_low:.3f}–{r.linear_high:.3f}, {where}), "
            f"MLP {r.mlp:.3f}{head}."
        )
    shuffled = probe_table["shuffled"]
    lines.append(
        f"Negative control (centers shuffled by slide): {shuffled.min():.3f}–{shuffled.max():.3f}, against chance {chance:.3f}."
    )
    base = probe_table.loc[baseline]
    removed = [m for m, r in probe_table.drop(index=baseline).iterrows() if r.linear_high < base.linear_low]
    lines.append(
        "Adversaries whose linear-probe CI lies entirely below the baseline's: "
        + (", ".join(removed) if removed else "**none**")
        + "."
    )
    return lines
