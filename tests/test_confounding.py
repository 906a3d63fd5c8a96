"""confounding.confounder_report: center visibility from colour and the label's association with the center."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtlutils.evaluation import confounding


def _cohort(confounded: bool, seed: int = 0):
    """Three centers with their own tint (4 slides each, 6 patches per slide); tumour rate per center
    0.9 / 0.5 / 0.1 when confounded, 0.5 everywhere otherwise."""
    rng = np.random.default_rng(seed)
    tints = {"A": (200, 120, 170), "B": (170, 110, 200), "C": (220, 150, 150)}
    rates = {"A": 0.9, "B": 0.5, "C": 0.1} if confounded else dict.fromkeys(tints, 0.5)
    images, rows = [], []
    for center, tint in tints.items():
        for s in range(4):
            for _ in range(6):
                noise = rng.normal(0, 12, (32, 32, 3))
                images.append(np.clip(np.asarray(tint) + noise, 0, 255).astype(np.uint8))
                rows.append(
                    {
                        "center": center,
                        "slide_id": f"{center}{s}",
                        "label": float(rng.random() < rates[center]),
                    }
                )
    return np.stack(images), pd.DataFrame(rows)


def test_report_sees_the_tint_and_the_planted_association():
    images, meta = _cohort(confounded=True)
    report = confounding.confounder_report(images, meta)
    assert report["center_chance"] == pytest.approx(1 / 3)
    assert report["center_from_colour"] > 0.9  # the tint tells the center on held-out slides
    assert report["label_from_center_auc"] > 0.75
    _, control = _cohort(confounded=False)
    assert confounding.confounder_report(images, control)["label_from_center_auc"] < 0.65


def test_report_needs_labelled_patches_from_two_centers():
    images, meta = _cohort(confounded=True)
    one_center = meta.assign(center="A")
    with pytest.raises(ValueError, match="at least two centers"):
        confounding.confounder_report(images, one_center)
