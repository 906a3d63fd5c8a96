"""The bag Transformer and its training loop: padding masks, tokens, attention, masked targets, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtlutils.bags.readers import BagSet
from mtlutils.experiments.bag_protocol import patient_folds
from mtlutils.mil import PAPER_B, BagTransformer, MILConfig, MILTrainConfig, fit_bags, pad_bags, predict_bags

JOINT = {"biomarker": "binary", "tme": "regression"}


def fake_bags(n: int = 24, d: int = 6, seed: int = 0, signal: float = 1.5) -> BagSet:
    """Bags whose tiles carry the biomarker (dimension 0) and the TME score (dimension 1)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    tme = np.clip(0.3 + 0.4 * y + 0.1 * rng.standard_normal(n), 0, 1)
    feats = []
    for i in range(n):
        x = rng.standard_normal((int(rng.integers(3, 9)), d)).astype(np.float32)
        x[:, 0] += signal * y[i]
        x[:, 1] += 3 * tme[i]
        feats.append(x)
    return BagSet(
        patients=np.array([f"p{i}" for i in range(n)], dtype=object),
        feats=feats,
        tile_slides=[np.full(len(f), f"s{i}", dtype=object) for i, f in enumerate(feats)],
        coords=[np.zeros((len(f), 2)) for f in feats],
        y=y,
        tme=tme,
        center=np.full(n, "A"),
        cohort=np.full(n, "internal"),
        extractor="fake",
        dim=d,
    )


@pytest.mark.parametrize(
    "cfg", [MILConfig(), MILConfig(d_model=48, heads=6, encoder_layers=2, decoder_layers=2)]
)
def test_a_bag_gives_the_same_outputs_padded_or_alone(cfg):
    torch.manual_seed(0)
    model = BagTransformer(6, JOINT, cfg).eval()
    bags = [
        np.random.default_rng(k).standard_normal((n, 6)).astype(np.float32) for k, n in enumerate((3, 11, 7))
    ]
    with torch.no_grad():
        out, tokens, att = model.embed(*pad_bags(bags), attention=True)
        for i, bag in enumerate(bags):
            one, one_tokens, one_att = model.embed(*pad_bags([bag]), attention=True)
            for k in out:
                assert abs(float(out[k][i] - one[k][0])) <= 1e-5
            assert torch.allclose(tokens["biomarker"][i], one_tokens["biomarker"][0], atol=1e-5)
            assert torch.allclose(att[i, : len(bag)], one_att[0], atol=1e-5)
            assert float(att[i, len(bag) :].abs().sum()) == 0.0
            assert math.isclose(float(att[i].sum()), 1.0, rel_tol=1e-5)


def test_tokens_heads_and_paper_sizes():
    joint, base = BagTransformer(6, JOINT), BagTransformer(6, {"biomarker": "binary"})
    assert joint.tokens.shape[0] == 2 and base.tokens.shape[0] == 1 and joint.order[0] == "biomarker"
    paper = BagTransformer(768, JOINT, PAPER_B)
    assert paper.cfg.d_model == 384 and len(paper.decoder) == 2 and len(paper.encoder.layers) == 2
    with pytest.raises(ValueError, match="multiple of heads"):
        MILConfig(d_model=50, heads=6)
    with pytest.raises(ValueError, match="zero tiles"):
        pad_bags([np.ones((2, 6), np.float32), np.ones((0, 6), np.float32)])


def test_training_logs_weights_cosines_and_steps_the_schedule_per_epoch():
    bags = fake_bags()
    fit = fit_bags(
        bags,
        np.arange(16),
        np.arange(16, 24),
        config=MILTrainConfig(weighting="uncert", gradient="pcgrad", epochs=4, patience=10),
    )
    h = fit.history
    assert {"weight.biomarker", "weight.tme", "cos.biomarker.tme", "val_monitor", "train_loss.tme"} <= set(
        h.columns
    )
    lr = h["lr"].to_numpy()
    expected = 1e-3 * (1 + np.cos(np.pi * np.arange(4) / 4)) / 2
    assert np.allclose(lr, expected), "cosine schedule stepped once per epoch"
    assert h["weight.tme"].nunique() > 1, "the uncertainty weights are learned (they are in the optimizer)"
    pred = predict_bags(fit, bags.subset(np.arange(16, 24)), attention=True)
    assert (
        pred["prob"].shape == (8,) and pred["embedding"].shape == (8, 64) and np.isfinite(pred["tme"]).all()
    )
    assert [len(a) for a in pred["attention"]] == [len(f) for f in bags.feats[16:24]]


def test_a_bag_without_tme_drops_that_task_for_that_bag():
    bags = fake_bags()
    bags.tme[::2] = np.nan
    fit = fit_bags(bags, np.arange(16), np.arange(16, 24), config=MILTrainConfig(epochs=2, batch_size=1))
    assert np.isfinite(fit.history["train_loss.tme"]).all()
    assert fit.scaler.low >= 0 and fit.scaler.high <= 1


def test_the_baseline_learns_a_planted_signal():
    bags = fake_bags(n=40, signal=2.0)
    fit = fit_bags(
        bags, np.arange(24), np.arange(24, 32), joint=False, config=MILTrainConfig(epochs=15, patience=15)
    )
    from mtlutils.evaluation.metrics import auc

    assert auc(bags.y[32:], predict_bags(fit, bags.subset(np.arange(32, 40)))["prob"]) > 0.8
    assert np.isnan(predict_bags(fit, bags.subset([0]))["tme"]).all()


def test_bad_input_is_named():
    bags = fake_bags()
    bags.feats[3][0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="patients p3 have non-finite"):
        fit_bags(bags, np.arange(16), np.arange(16, 24), config=MILTrainConfig(epochs=1))
    bags = fake_bags()
    bags.feats[5][:] = 3e38  # finite, but overflows inside the model: a NaN loss
    with pytest.raises(FloatingPointError, match="non-finite .* loss on the batch of patients .*p5"):
        fit_bags(bags, np.arange(16), np.arange(16, 24), config=MILTrainConfig(epochs=1, batch_size=16))
    bags = fake_bags()
    with pytest.raises(ValueError, match="one biomarker class"):
        fit_bags(bags, np.arange(0, 16, 2), np.arange(16, 24), config=MILTrainConfig(epochs=1))
    bags.tme[:] = 0.5
    with pytest.raises(ValueError, match="cannot min-max scale"):
        fit_bags(bags, np.arange(16), np.arange(16, 24), config=MILTrainConfig(epochs=1))


def test_folds_are_stratified_patient_folds_and_refuse_one_class():
    y = np.r_[np.ones(10), np.zeros(15)].astype(int)
    folds = patient_folds(y, 5, seed=0)
    tests = np.concatenate([f["test"] for f in folds])
    assert sorted(tests.tolist()) == list(range(25))
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and not set(f["train"]) & set(f["test"])
        assert y[f["test"]].sum() == 2
    assert [f["test"].tolist() for f in patient_folds(y, 5, seed=0)] == [f["test"].tolist() for f in folds]
    with pytest.raises(ValueError, match="patients of each class"):
        patient_folds(np.r_[np.ones(2), np.zeros(20)].astype(int), 3)
