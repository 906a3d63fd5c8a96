"""The bag cohort's card, from ground truth only (never a model): how much the biomarker shows in the tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.evaluation.metrics import auc

#: Pre-registered band of the biomarker's AUC from the true TME score (paper B's cohorts: TME signatures
#: with a non-random, but far from perfect, relation to MSI/HRD).
TME_AUC_BAND = (0.80, 0.90)


def patient_truth(root: str | Path) -> pd.DataFrame:
    """Per patient: biomarker, true TME score, cohort, number of slides and tiles, and the mean true
    lymphocyte density (per mm²) of all its tiles and of its non-tumour tiles."""
    root = Path(root)
    patients = pd.read_csv(root / "truth" / "patients.csv")
    tiles = pd.read_csv(root / "truth" / "tiles.csv")
    slides = pd.read_csv(root / "truth" / "slides.csv")[["slide_id", "patient_id"]]
    tiles = tiles.merge(slides, on="slide_id")
    grouped = tiles.groupby("patient_id")
    stroma = tiles[tiles["tumour_fraction"] == 0].groupby("patient_id")["lymph_per_mm2"].mean()
    out = patients.set_index("patient_id")
    out["n_tiles"] = grouped.size()
    out["lymph_per_mm2"] = grouped["lymph_per_mm2"].mean()
    out["lymph_stroma_per_mm2"] = stroma
    out["tumour_tile_share"] = grouped["tumour_fraction"].mean()
    return out.reset_index()


def bag_card(root: str | Path) -> dict[str, Any]:
    """AUC of the biomarker from the true TME score (band :data:`TME_AUC_BAND`) and from the true mean
    lymphocyte density of each patient's tiles (all, and non-tumour tiles only), overall and per cohort."""
    table = patient_truth(root)
    card: dict[str, Any] = {
        "n_patients": int((table["cohort"] == "internal").sum()),
        "n_external": int((table["cohort"] == "external").sum()),
        "n_slides": int(table["n_slides"].sum()),
        "n_tiles": int(table["n_tiles"].sum()),
        "prevalence": float(table["biomarker"].mean()),
        "tme_auc_band": list(TME_AUC_BAND),
    }
    for cohort in ("internal", "external"):
        part = table[table["cohort"] == cohort]
        if part["biomarker"].nunique() < 2:
            continue
        card[f"{cohort}.auc_tme"] = auc(part["biomarker"], part["tme_score"])
        card[f"{cohort}.auc_lymph"] = auc(part["biomarker"], part["lymph_per_mm2"])
        stroma = part["lymph_stroma_per_mm2"].fillna(part["lymph_per_mm2"])
        card[f"{cohort}.auc_lymph_stroma"] = auc(part["biomarker"], stroma)
    card["auc_tme"] = auc(table["biomarker"], table["tme_score"])
    card["auc_lymph"] = auc(table["biomarker"], table["lymph_per_mm2"])
    card["tme_in_band"] = bool(TME_AUC_BAND[0] <= card["auc_tme"] <= TME_AUC_BAND[1])
    card["tiles_per_bag"] = [
        int(table["n_tiles"].min()),
        float(np.median(table["n_tiles"])),
        int(table["n_tiles"].max()),
    ]
    return card


def format_bag_card(card: dict[str, Any]) -> str:
    """The card as a few lines of text."""
    lo, hi = card["tme_auc_band"]
    lines = [
        f"{card['n_patients']} internal + {card['n_external']} external patients, {card['n_slides']} slides, "
        f"{card['n_tiles']} tiles (per patient min/median/max {card['tiles_per_bag']}), "
        f"biomarker prevalence {card['prevalence']:.2f}",
        f"biomarker AUC from the true TME score: {card['auc_tme']:.3f} "
        f"({'inside' if card['tme_in_band'] else 'OUTSIDE'} the pre-registered band {lo:.2f}–{hi:.2f})",
        f"biomarker AUC from the true mean lymphocyte density of the tiles: {card['auc_lymph']:.3f}",
    ]
    for cohort in ("internal", "external"):
        if f"{cohort}.auc_tme" in card:
            lines.append(
                f"  {cohort}: TME {card[f'{cohort}.auc_tme']:.3f}, lymphocytes (all tiles) "
                f"{card[f'{cohort}.auc_lymph']:.3f}, (non-tumour tiles) {card[f'{cohort}.auc_lymph_stroma']:.3f}"
            )
    return "\n".join(lines)
