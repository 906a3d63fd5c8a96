"""How strongly does the acquisition center confound the label? Measured on patches, no model needed.

Two numbers make the shortcut concrete:

- ``center_from_colour``: held-out accuracy of a linear probe predicting the center from six colour
  statistics of a patch (mean and spread of CIELAB L, a, b), split by slide — how visible the center is;
- ``label_from_center_auc``: AUC of the label scored by nothing but its center's tumour rate — how much
  the center alone tells about the label (0.5 when prevalence is equal everywhere).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtlutils.data import stain
from mtlutils.evaluation import metrics, probes

COLOUR_COLUMNS = ("L_mean", "a_mean", "b_mean", "L_std", "a_std", "b_std")


def colour_features(images: np.ndarray) -> np.ndarray:
    """(N, 6) colour statistics per patch: CIELAB mean and standard deviation of L, a, b."""
    return stain.stain_statistics(images)[list(COLOUR_COLUMNS)].to_numpy()


def confounder_report(images: np.ndarray, meta: pd.DataFrame, seed: int = 0) -> dict[str, float]:
    """Center visibility and center–label association for labelled patches (``meta``: center, label, slide_id)."""
    labelled = meta["label"].notna().to_numpy()
    if labelled.sum() < 2 or meta.loc[labelled, "center"].nunique() < 2:
        raise ValueError(
            "confounder_report needs labelled patches from at least two centers; check the split chosen"
        )
    meta = meta.loc[labelled]
    probe = probes.probe_accuracy(
        colour_features(images[labelled]),
        meta["center"].to_numpy(),
        groups=meta["slide_id"].to_numpy(),
        seed=seed,
    )
    center_rate = meta.groupby("center")["label"].transform("mean")
    return {
        "center_from_colour": float(probe["accuracy_heldout"]),
        "center_chance": float(probe["chance"]),
        "label_from_center_auc": float(metrics.auc(meta["label"].to_numpy(), center_rate.to_numpy())),
    }
