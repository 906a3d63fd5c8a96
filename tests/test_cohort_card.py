"""The cohort card: its keys and bands, and figures with a known answer on a tiny cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtlutils import synthetic as syn
from mtlutils.synthetic import card as card_mod


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny LEGACY cohort (3 slides per center, 640 px: exact annotations, no mimics) and its
    control twin, tiled into 96-px patches."""
    from mtlutils.data import tile_cohort

    root = tmp_path_factory.mktemp("card")
    dirs = {}
    for name, confounder in (("cohort", True), ("control", False)):
        out = root / name
        syn.generate_cohort(
            out,
            slides_per_center=3,
            size_px=640,
            seed=1,
            confounder=confounder,
            show_progress=False,
            settings=syn.LEGACY,
        )
        tile_cohort(out / "manifest.csv", root / f"{name}_patches", tile_px=96, show_progress=False)
        dirs[name], dirs[f"{name}_patches"] = out, root / f"{name}_patches"
    return dirs


def test_true_labels_match_the_exact_annotation(tiny_pair):
    from mtlutils.data.index import read_patch_index

    index = read_patch_index(tiny_pair["cohort_patches"])
    labels = syn.patch_dir_true_labels(tiny_pair["cohort_patches"], tiny_pair["cohort"])
    assert list(labels.columns) == list(syn.TRUE_LABEL_COLUMNS) and len(labels) == len(index)
    assert labels["true_tumour_fraction"].between(0, 1).all()
    kept = index["label"].notna().to_numpy()
    # this cohort's annotations are the exact regions: same labels, same fractions (same sample points)
    assert (labels["true_label"].to_numpy()[kept] == index["label"].to_numpy()[kept]).all()
    assert np.allclose(labels["true_tumour_fraction"], index["tumour_fraction"], atol=1e-6)
    assert (labels["n_mimic"] == 0).all() and not labels["has_mimic"].any()  # no mimic in this cohort


def test_colour_features_are_channel_means(tiny_pair):
    from mtlutils import data

    patches = data.load_patches(tiny_pair["cohort_patches"])
    colour = card_mod.colour_features(tiny_pair["cohort_patches"])
    assert list(colour.columns) == list(card_mod.COLOUR_FEATURES) and len(colour) == len(patches.images)
    first = patches.images[0].reshape(-1, 3).astype(float)
    assert colour.iloc[0, :3].to_numpy() == pytest.approx(first.mean(axis=0))
    assert colour.iloc[0, 3:].to_numpy() == pytest.approx((-np.log((first + 1) / 256)).mean(axis=0))


def test_card_keys_bands_and_known_figures(tiny_pair):
    card = card_mod.cohort_card(
        tiny_pair["cohort_patches"], tiny_pair["cohort"], tiny_pair["control_patches"], tiny_pair["control"]
    )
    assert set(card_mod.BANDS) <= set(card) and set(card["in_band"]) == set(card_mod.BANDS)
    assert card["bands"]["oracle_auc"] == [0.85, 0.92]
    assert card["label_noise"] == 0.0  # exact annotations: every training label is the true label
    assert card["mimic_fraction"] == 0.0 and card["in_band"]["mimic_fraction"] is False
    # 3 slides per center: one test slide per training center; has_tumour of A, B, C at 0.8 / 0.5 / 0.2
    manifest = syn.plan_cohort(3, seed=1, settings=syn.LEGACY)
    test = manifest[manifest["split"] == "test"]
    assert card["n_tumour_slides_test"] == int(test["has_tumour"].sum())
    assert card["n_tumour_slides_external"] == int(
        manifest.loc[manifest["center"] == "D", "has_tumour"].sum()
    )
    for key in ("oracle_auc", "colour_internal_auc", "center_only_auc"):
        assert np.isnan(card[key]) or 0.0 <= card[key] <= 1.0
    assert set(card["single_feature_auc"]) == set(card_mod.ORACLE_FEATURES)
    assert all(np.isnan(v) or v >= 0.5 for v in card["single_feature_auc"].values())
    assert card["center_only_auc"] > 0.5  # A (most tumour) ranks above C in the confounded pool
    assert set(card["colour_within_center_control_by_center"]) == {"A", "B", "C"}
    assert isinstance(card_mod.format_card(card), str)


def test_center_only_auc_is_one_half_without_center_differences():
    # one center: every patch gets the same score, so the center ranks nothing
    from mtlutils.synthetic.card import _auc

    assert _auc(np.array([0, 1, 0, 1]), np.full(4, 0.5)) == pytest.approx(0.5)


def test_hard_cohort_has_label_noise_and_mimics(tmp_path):
    """The default (HARD) cohort: loose annotations make some training labels wrong, mimics appear."""
    from mtlutils.data import tile_cohort

    assert syn.DEFAULT_SETTINGS == syn.HARD
    dirs = {}
    for name, confounder in (("cohort", True), ("control", False)):
        syn.generate_cohort(
            tmp_path / name,
            slides_per_center=3,
            size_px=768,
            seed=1,
            confounder=confounder,
            show_progress=False,
        )
        tile_cohort(
            tmp_path / name / "manifest.csv", tmp_path / f"{name}_patches", tile_px=96, show_progress=False
        )
        dirs[name], dirs[f"{name}_patches"] = tmp_path / name, tmp_path / f"{name}_patches"
    card = card_mod.cohort_card(
        dirs["cohort_patches"], dirs["cohort"], dirs["control_patches"], dirs["control"]
    )
    assert card["generator_hash"] == syn.generator_hash(syn.HARD)
    assert card["label_noise"] > 0.0 and card["mimic_fraction"] > 0.0
    assert card["center_only_auc"] > 0.5
    table = card_mod.card_table(card)
    assert list(table.index) == list(card_mod.BANDS) and table["in band"].dtype == bool
    fig = card_mod.plot_card(card)
    assert len(fig.axes) == len(card_mod.BANDS)
