"""The guided CNN: gradient reversal, reversal schedules, heads bound by name, backbones and freezing."""

from __future__ import annotations

import math

import pytest
import torch

from mtlutils.models import (
    GradientReversal,
    GuidedNet,
    ModelConfig,
    ReversalSchedule,
    TaskSpec,
    create_backbone,
    freeze_backbone,
    main_task_name,
    parse_tasks,
    reverse_gradient,
)

TASKS = {
    "tumour": "binary",
    "count": "regression",
    "area": "regression",
    "center": TaskSpec("center", "adversarial-class", n_classes=3),
}


def small_model(tasks=TASKS, seed: int = 0, **config) -> GuidedNet:
    torch.manual_seed(seed)
    return GuidedNet(tasks, ModelConfig(trunk=(16,), dropout=0.0, **config))


# ------------------------------------------------------------------------------ gradient reversal
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0, 2.5])
def test_reverse_gradient_negates_and_scales_against_autograd(strength):
    torch.manual_seed(0)
    x = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(5, 4)
    y = reverse_gradient(x, strength)
    assert torch.equal(y, x)  # identity forward
    (g_rev,) = torch.autograd.grad((torch.tanh(y) * w).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g_plain,) = torch.autograd.grad((torch.tanh(x2) * w).sum(), x2)
    torch.testing.assert_close(g_rev, -strength * g_plain)


def test_adversarial_head_gets_plain_gradient_shared_layers_get_reversed():
    x = torch.rand(6, 3, 32, 32)
    target = torch.tensor([0, 1, 2, 0, 1, 2])

    def grads(strength):
        model = small_model(seed=1)
        model.eval()  # no batch-norm statistics update, deterministic
        model.set_reversal_strength(strength)
        loss = torch.nn.functional.cross_entropy(model(x)["center"], target)
        loss.backward()
        head = model.heads["center"].classifiers[0].weight.grad.clone()
        shared = torch.cat([p.grad.flatten() for p in model.shared_parameters()])
        return head, shared

    head_on, shared_on = grads(1.0)
    head_plain, shared_plain = grads(-1.0)  # -1 turns the layer into a plain identity
    torch.testing.assert_close(head_on, head_plain)
    torch.testing.assert_close(shared_on, -shared_plain)
    assert shared_on.abs().sum() > 0
    _, shared_zero = grads(0.0)
    assert torch.count_nonzero(shared_zero) == 0


def test_reversal_layer_strength_is_settable():
    layer = GradientReversal(0.5)
    model = small_model()
    model.set_reversal_strength(0.25)
    strengths = [m.strength for m in model.modules() if isinstance(m, GradientReversal)]
    assert strengths == [0.25]
    assert "0.5" in repr(layer)


def test_reversal_schedules():
    const = ReversalSchedule("constant", strength=0.7)
    assert const(0, 10) == 0.7 and const(9.5, 10) == 0.7
    dann = ReversalSchedule("dann")
    assert dann(0, 10) == pytest.approx(0.0)
    assert dann(5, 10) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert dann(10, 10) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann(3, 10) < dann(4, 10)
    two = ReversalSchedule("two-phase", strength=1.0, switch_epoch=3)
    assert [two(e, 6) for e in (0, 2.99, 3, 5)] == [0.0, 0.0, 1.0, 1.0]
    assert two.first_full_epoch() == 3 and dann.first_full_epoch() == 0
    with pytest.raises(ValueError, match="schedule"):
        ReversalSchedule("linear")
    with pytest.raises(ValueError, match=">= 0"):
        ReversalSchedule(strength=-1)


# ----------------------------------------------------------------------------------- tasks / heads
def test_parse_tasks_sorts_and_validates():
    specs = parse_tasks({"tumour": "binary", "area": "regression"})
    assert list(specs) == ["area", "tumour"]
    with pytest.raises(ValueError, match="kind"):
        parse_tasks({"tumour": "classification"})
    with pytest.raises(ValueError, match="identifier"):
        parse_tasks({"nuclei count": "regression"})
    with pytest.raises(ValueError, match="differs"):
        parse_tasks({"a": TaskSpec("b", "binary")})
    with pytest.raises(ValueError, match="no tasks"):
        parse_tasks({})
    assert main_task_name(parse_tasks(TASKS)) == "tumour"
    with pytest.raises(ValueError, match="main_task"):
        main_task_name(parse_tasks({"a": "binary", "b": "binary"}))


def test_heads_are_bound_by_name_not_position():
    order_a = {"tumour": "binary", "count": "regression", "area": "regression", "center": TASKS["center"]}
    order_b = {"center": TASKS["center"], "area": "regression", "tumour": "binary", "count": "regression"}
    model_a, model_b = small_model(order_a, seed=3), small_model(order_b, seed=3)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    x = torch.rand(4, 3, 32, 32)
    out_a, out_b = model_a.eval()(x), model_b.eval()(x)
    for name in order_a:
        assert torch.equal(out_a[name], out_b[name])
    assert set(model_a.heads) == set(order_a)


def test_forward_shapes_and_feature_layers():
    model = GuidedNet(TASKS, ModelConfig(trunk=(32, 16)))
    out = model(torch.rand(5, 3, 48, 48))
    assert out["tumour"].shape == (5,) and out["count"].shape == (5,)
    assert out["center"].shape == (5, 3)
    feats = model.features(torch.rand(5, 3, 48, 48))
    assert [k for k in feats] == ["backbone", "dense1", "dense2", "shared"]
    assert feats["backbone"].shape == (5, 64) and feats["shared"].shape == (5, 16)
    assert model.embedding_dim == 16
    with pytest.raises(ValueError, match="n_classes"):
        GuidedNet({"tumour": "binary", "center": "adversarial-class"})


# ------------------------------------------------------------------------------------- backbones
def test_backbone_names_and_pretrained_are_local_only(tmp_path):
    with pytest.raises(ValueError, match="timm model"):
        create_backbone("no_such_net")
    with pytest.raises(ValueError, match="never downloaded"):
        create_backbone("tiny_cnn", pretrained=True)
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone("tiny_cnn", pretrained=tmp_path / "missing.pth")
    torch.manual_seed(0)
    source = create_backbone("tiny_cnn")
    path = tmp_path / "tiny.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_backbone("tiny_cnn", pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    torch.save({"state_dict": {"other.weight": torch.zeros(3)}}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="match only"):
        create_backbone("tiny_cnn", pretrained=tmp_path / "wrong.pth")


def test_timm_backbone_by_name():
    model = GuidedNet({"tumour": "binary"}, ModelConfig(backbone="test_convnext", trunk=(8,)))
    assert model(torch.rand(2, 3, 64, 64))["tumour"].shape == (2,)


def test_freezing_keeps_last_block_trainable_and_frozen_bn_in_eval():
    model = GuidedNet({"tumour": "binary"}, ModelConfig(trainable_blocks=1))
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("stages.2.") for n in trainable)
    assert len(model.shared_parameters()) == len(trainable) + 2  # + one dense layer (weight, bias)
    model.train()
    assert not model.backbone.stem[1].training  # frozen batch norm stays in eval
    assert model.backbone.stages[2][1].training
    assert model.trunk[0].training


def test_freezing_inception_leaves_only_the_last_inception_block():
    import timm

    backbone = timm.create_model("inception_v3", pretrained=False, num_classes=0)
    frozen = freeze_backbone(backbone, 1)
    trainable = {n.split(".")[0] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"Mixed_7c"}
    assert any(n.startswith("Mixed_7b") for n in frozen)
    with pytest.raises(ValueError, match=">= 0"):
        freeze_backbone(backbone, -1)


def test_paper_config():
    cfg = ModelConfig.paper()
    assert cfg.backbone == "inception_v3" and cfg.trunk == (2048, 512, 256) and cfg.dropout == 0.8
    assert cfg.trainable_blocks is None  # nothing to freeze without pretrained weights
    assert ModelConfig.paper("weights.pth").trainable_blocks == 1
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
