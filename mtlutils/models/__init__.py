"""The guided patch CNN of paper A: backbone -> global average pooling -> dense trunk -> one head per task.

Tasks are bound **by name**: every head lives in an ``nn.ModuleDict`` keyed by the task name and every
target is looked up by the same name, so reordering concepts changes nothing (heads are created in sorted
name order, so even the random initialisation is independent of the order in which tasks were listed).

Task kinds
    ``"binary"``             one logit, class-weighted BCE (the main tumour task)
    ``"regression"``         one linear output, MSE on standardised targets (desired concepts)
    ``"adversarial-class"``  a softmax classifier behind a :class:`GradientReversal` layer (undesired
                             concepts such as the acquisition center): the head learns to predict the
                             center, the shared layers receive the *negated* gradient and learn to hide it.

Backbones
    ``"tiny_cnn"`` (default) and ``"small_cnn"`` are local 4-layer ConvNets (61 k / 0.24 M parameters) that
    train from scratch on 48-64 px patches in seconds on a laptop CPU (tiny_cnn, 64 px, 2 threads: ~0.8 s
    per epoch of 2400 patches). No timm model is as cheap: the smallest (``test_convnext``, a test
    model) was 2.6x and ``resnet10t`` 10x slower per epoch (``bench/training.py --backbone NAME``).
    Any other name is created with ``timm.create_model(name, pretrained=False)`` -- e.g.
    ``"inception_v3"`` at 224 px as in the paper (see :meth:`ModelConfig.paper`).
    Pretrained weights come only from a local file (``pretrained="path/to/weights.safetensors"``); nothing
    is ever downloaded.
"""

from __future__ import annotations

from mtlutils.models.adversary import (
    ADVERSARY_KINDS,
    OBJECTIVES,
    AdversaryConfig,
    AdversaryHead,
    confusion_loss,
)
from mtlutils.models.backbones import (
    HEAD_PREFIXES,
    LOCAL_BACKBONES,
    TinyConvNet,
    create_backbone,
    freeze_backbone,
    load_local_weights,
)
from mtlutils.models.guided_cnn import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_TRUNK,
    GuidedNet,
    ModelConfig,
    count_parameters,
)
from mtlutils.models.reversal import GradientReversal, ReversalSchedule, reverse_gradient
from mtlutils.models.tasks import TASK_KINDS, TaskSpec, main_task_name, parse_tasks

__all__ = [
    "ADVERSARY_KINDS",
    "OBJECTIVES",
    "AdversaryConfig",
    "AdversaryHead",
    "confusion_loss",
    "HEAD_PREFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOCAL_BACKBONES",
    "PAPER_TRUNK",
    "TASK_KINDS",
    "GradientReversal",
    "GuidedNet",
    "ModelConfig",
    "ReversalSchedule",
    "TaskSpec",
    "TinyConvNet",
    "count_parameters",
    "create_backbone",
    "freeze_backbone",
    "load_local_weights",
    "main_task_name",
    "parse_tasks",
    "reverse_gradient",
]
