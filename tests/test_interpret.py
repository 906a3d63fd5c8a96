"""mtlutils.interpret: probes score held-out rows only, seeded maps repeat, Grad-CAM points where the evidence is."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mtlutils import models
from mtlutils.interpret import activations, concept_probes, embeddings, gradcam


def _slides(n: int, per_slide: int = 10) -> np.ndarray:
    return np.repeat(np.arange(n // per_slide), per_slide)


def test_probe_recovers_a_planted_linear_concept_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 20))
    planted = x @ rng.standard_normal(20) + 0.05 * rng.standard_normal(300)
    groups = _slides(300)
    good = concept_probes.probe_r2(x, planted, groups, n_boot=50)
    assert good["r2"] > 0.95 and good["low"] <= good["r2"] <= good["high"]
    noise = concept_probes.probe_r2(x, rng.standard_normal(300), groups, n_boot=50)
    assert noise["r2"] < 0.1


def test_probe_is_never_scored_on_its_own_training_rows():
    # one-hot row identity: a ridge memorises every row (in-sample R^2 = 1) and knows nothing of a new row
    n = 120
    rng = np.random.default_rng(1)
    x, target = np.eye(n), rng.standard_normal(n)
    out = concept_probes.probe_r2(x, target, _slides(n), n_boot=20, alphas=(1e-8,))
    assert out["r2_in_sample"] > 0.99
    assert out["r2"] < 0.05
    # a slide-level target read from slide identity: held out by slide, the probe cannot know it
    groups = _slides(n, 6)
    slide_value = rng.standard_normal(groups.max() + 1)[groups]
    onehot = np.eye(groups.max() + 1)[groups]
    assert concept_probes.probe_r2(onehot, slide_value, groups, n_boot=20)["r2"] < 0.05


def test_out_of_fold_skips_nan_targets_and_nested_table():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 5))
    t = x[:, 0].copy()
    t[:7] = np.nan
    pred, alphas = concept_probes.out_of_fold(x, t, _slides(100))
    assert np.isnan(pred[:7]).all() and np.isfinite(pred[7:]).all() and alphas.size == 5
    table = concept_probes.probe_table({"m": {"l": x}}, {"c": t}, _slides(100), n_boot=20)
    assert concept_probes.nested(table)["m"]["l"]["c"] > 0.9
    low, high = concept_probes.nested(table, "ci")["m"]["l"]["c"]
    assert low <= high


def test_seeded_umap_is_reproducible():
    x = np.random.default_rng(3).standard_normal((80, 10))
    a, b = embeddings.umap_map(x, seed=4), embeddings.umap_map(x, seed=4)
    assert a.shape == (80, 2) and np.allclose(a, b)
    s = embeddings.silhouettes(x, {"noise": np.arange(80) % 2, "one": np.zeros(80)})
    assert abs(s["noise"]) < 0.1 and np.isnan(s["one"])


def test_capture_matches_the_networks_own_features_and_removes_its_hooks():
    torch.manual_seed(0)
    net = models.GuidedNet([models.TaskSpec("tumour", "binary")])
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    got = activations.capture(net, images, activations.guided_layers(net), batch_size=4)
    with torch.no_grad():
        own = net.eval().features(images.float() / 255)
    assert np.allclose(got["gap"], own["backbone"].numpy(), atol=1e-5)
    assert np.allclose(got["shared"], own["shared"].numpy(), atol=1e-5)
    assert all(not m._forward_hooks for m in net.modules())


class _QuadrantNet(nn.Module):
    """Sees only the top-left quadrant of its input (a mask before the convolution)."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU())
        nn.init.uniform_(self.block[0].weight, 0.0, 1.0)

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[..., : x.shape[2] // 2, : x.shape[3] // 2] = 1
        return self.block(x * mask).mean(dim=(1, 2, 3))


def test_gradcam_lights_the_quadrant_the_output_depends_on():
    net = _QuadrantNet()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert gradcam.last_conv_block(net) is net.block
    cam = gradcam.gradcam(net, images)
    assert cam.shape == (3, 32, 32) and cam.max() <= 1 + 1e-6
    inside = cam[:, :15, :15].mean()
    outside = np.concatenate([cam[:, 18:, :].ravel(), cam[:, :, 18:].ravel()]).mean()
    assert inside > 0.3 and outside < 0.01 * inside
    assert all(not m._forward_hooks for m in net.modules())


def test_gradcam_of_a_guided_head():
    net = models.GuidedNet([models.TaskSpec("tumour", "binary"), models.TaskSpec("count", "regression")])
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    cam = gradcam.gradcam(net, images, gradcam.task_output("count"))
    assert cam.shape == (2, 32, 32) and np.isfinite(cam).all()
    with pytest.raises(ValueError):
        gradcam.last_conv_block(nn.Linear(2, 2))
