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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

TASK_KINDS = ("binary", "regression", "adversarial-class")
PAPER_TRUNK = (2048, 512, 256)  # paper A, section 3.5 (dropout 0.8, L2 0.01 on these layers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_PREFIXES = ("head", "fc", "classifier", "norm", "fc_norm", "conv_head", "bn2", "global_pool")


# --------------------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class TaskSpec:
    """One task: its ``name`` (the key of its target), ``kind`` (see :data:`TASK_KINDS`) and, for class
    tasks, ``n_classes`` (filled in from the training targets by :func:`mtlutils.training.fit`)."""

    name: str
    kind: str
    n_classes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind {self.kind!r} is not one of {TASK_KINDS}")
        if not self.name.isidentifier():
            raise ValueError(f"task name {self.name!r} must be a Python identifier (letters, digits, _)")
        if self.kind == "adversarial-class" and self.n_classes is not None and self.n_classes < 2:
            raise ValueError(f"task {self.name!r}: an adversarial class task needs n_classes >= 2")

    @property
    def is_adversarial(self) -> bool:
        return self.kind == "adversarial-class"

    @property
    def out_features(self) -> int:
        if self.kind == "adversarial-class":
            if self.n_classes is None:
                raise ValueError(f"task {self.name!r}: n_classes unknown; pass TaskSpec(..., n_classes=K)")
            return self.n_classes
        return 1


def parse_tasks(tasks: Mapping[str, str | TaskSpec] | Iterable[TaskSpec]) -> dict[str, TaskSpec]:
    """Normalise ``{"tumour": "binary", "count": "regression", ...}`` (or TaskSpecs) to a dict of
    :class:`TaskSpec` **sorted by name** (the order the user listed them in never matters)."""
    if isinstance(tasks, Mapping):
        specs = []
        for name, value in tasks.items():
            if isinstance(value, TaskSpec):
                if value.name != name:
                    raise ValueError(f"task key {name!r} differs from its TaskSpec name {value.name!r}")
                specs.append(value)
            else:
                specs.append(TaskSpec(name=name, kind=str(value)))
    else:
        specs = list(tasks)
    if not specs:
        raise ValueError("no tasks given; pass e.g. {'tumour': 'binary'}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names in {names}")
    return {s.name: s for s in sorted(specs, key=lambda s: s.name)}


def main_task_name(tasks: Mapping[str, TaskSpec], main_task: str | None = None) -> str:
    """The task used for early stopping and AUC: ``main_task`` or the only ``"binary"`` task."""
    if main_task is not None:
        if main_task not in tasks:
            raise ValueError(f"main_task={main_task!r} is not among the tasks {list(tasks)}")
        return main_task
    binary = [n for n, s in tasks.items() if s.kind == "binary"]
    if len(binary) != 1:
        raise ValueError(f"cannot tell the main task among {list(tasks)}; pass main_task='name'")
    return binary[0]


# ---------------------------------------------------------------------------------- gradient reversal
class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:  # type: ignore[override]
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-strength`` in the backward pass."""
    return _ReverseGradient.apply(x, float(strength))


class GradientReversal(nn.Module):
    """Gradient reversal layer (Ganin et al. 2016). ``strength`` (lambda >= 0) is set by the schedule."""

    def __init__(self, strength: float = 1.0) -> None:
        super().__init__()
        self.strength = float(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}"


@dataclass(frozen=True)
class ReversalSchedule:
    """Strength lambda of the gradient reversal over training.

    ``kind="constant"``: lambda = ``strength`` throughout.
    ``kind="dann"``: lambda = strength * (2 / (1 + exp(-10 p)) - 1), p = training progress in [0, 1].
    ``kind="two-phase"``: lambda = 0 before ``switch_epoch`` and ``strength`` from it on (the original
    code's schedule; learned loss weights are *not* reset at the switch, and only epochs after the
    switch may become the restored "best" checkpoint).
    """

    kind: str = "constant"
    strength: float = 1.0
    switch_epoch: int = 0

    def __post_init__(self) -> None:
        if self.kind not in {"constant", "dann", "two-phase"}:
            raise ValueError(f"reversal schedule {self.kind!r} is not 'constant', 'dann' or 'two-phase'")
        if self.strength < 0:
            raise ValueError(
                f"reversal strength must be >= 0 (it is negated inside the layer), got {self.strength}"
            )

    def __call__(self, epoch_progress: float, n_epochs: int) -> float:
        """lambda at ``epoch_progress`` (epochs done, fractional) out of ``n_epochs``."""
        if self.kind == "constant":
            return self.strength
        if self.kind == "dann":
            p = min(max(epoch_progress / max(n_epochs, 1), 0.0), 1.0)
            return self.strength * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
        return self.strength if epoch_progress >= self.switch_epoch else 0.0

    def first_full_epoch(self) -> int:
        """First epoch whose checkpoint may be restored (after the switch for two-phase)."""
        return self.switch_epoch if self.kind == "two-phase" else 0


# ------------------------------------------------------------------------------------------ backbones
def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class TinyConvNet(nn.Module):
    """Four 3x3 conv-BN-ReLU layers (strides 2, 2, 2, 1; widths w, 2w, 4w, 4w) + global average pooling.

    Receptive field ~43 px, enough for nuclei-scale texture on 48-64 px patches at ~2 um/px. Exposes
    the timm attributes used here (``num_features``, ``group_matcher``) so freezing works the same way.
    """

    def __init__(self, width: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_chans, width, 2)
        self.stages = nn.Sequential(
            _conv_bn_relu(width, 2 * width, 2),
            _conv_bn_relu(2 * width, 4 * width, 2),
            _conv_bn_relu(4 * width, 4 * width, 1),
        )
        self.num_features = 4 * width
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x)).flatten(1)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}


LOCAL_BACKBONES = {"tiny_cnn": {"width": 16}, "small_cnn": {"width": 32}}


def load_local_weights(module: nn.Module, path: str | Path, min_matched: float = 0.5) -> list[str]:
    """Load a local ``.safetensors`` / ``.pth`` state dict into ``module``; return the keys not loaded.

    Keys of a classifier that the backbone does not have (``fc.*``) are skipped; raises ``ValueError`` when
    fewer than ``min_matched`` of the module's tensors found a same-shaped match (wrong architecture).
    """
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights {path} not found; pass the path of a local .safetensors/.pth file "
            "(nothing is downloaded) or pretrained=None to train from scratch"
        )
    state = load_state_dict(str(path), use_ema=False, weights_only=True)
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < min_matched * len(own):
        raise ValueError(
            f"weights {path} match only {len(usable)}/{len(own)} tensors of the backbone; "
            "check that the file belongs to the backbone name you passed"
        )
    module.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def create_backbone(
    name: str = "tiny_cnn", pretrained: str | Path | None = None, in_chans: int = 3
) -> nn.Module:
    """A feature extractor returning pooled features ``(B, num_features)``; never downloads weights."""
    if pretrained is True or pretrained == "True":  # a boolean would mean "download" in timm
        raise ValueError("pretrained must be a local file path or None (weights are never downloaded)")
    if name in LOCAL_BACKBONES:
        backbone: nn.Module = TinyConvNet(in_chans=in_chans, **LOCAL_BACKBONES[name])
    else:
        import timm

        if not timm.is_model(name):
            raise ValueError(
                f"backbone {name!r} is neither a local one {sorted(LOCAL_BACKBONES)} nor a timm model; "
                "see timm.list_models()"
            )
        backbone = timm.create_model(
            name, pretrained=False, num_classes=0, global_pool="avg", in_chans=in_chans
        )
    if pretrained is not None:
        load_local_weights(backbone, pretrained)
    return backbone


def freeze_backbone(backbone: nn.Module, trainable_blocks: int | None) -> list[str]:
    """Freeze all but the last ``trainable_blocks`` blocks (timm's coarse parameter groups; a trailing
    head norm stays trainable too). ``None`` leaves everything trainable. Returns the frozen names."""
    if trainable_blocks is None:
        return []
    if trainable_blocks < 0:
        raise ValueError(f"trainable_blocks must be >= 0 or None, got {trainable_blocks}")
    from timm.models import group_parameters

    if not hasattr(backbone, "group_matcher"):
        raise ValueError(f"{type(backbone).__name__} has no group_matcher; use trainable_blocks=None")
    groups = list(group_parameters(backbone, backbone.group_matcher(coarse=True)).values())
    keep: set[str] = set()
    blocks_seen = 0
    for names in reversed(groups):
        head_like = all(n.split(".")[0] in HEAD_PREFIXES for n in names)
        if head_like:
            keep.update(names)
            continue
        if blocks_seen >= trainable_blocks:
            break
        keep.update(names)
        blocks_seen += 1
    frozen = []
    for name, param in backbone.named_parameters():
        if name not in keep:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


# -------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    """Architecture choices. ``paper()`` gives paper A's InceptionV3 setting (needs a local weights file)."""

    backbone: str = "tiny_cnn"
    trunk: tuple[int, ...] = (128,)
    dropout: float = 0.2
    pretrained: str | None = None
    trainable_blocks: int | None = None
    input_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if any(int(w) < 1 for w in self.trunk):
            raise ValueError(f"trunk layer sizes must be positive, got {self.trunk}")

    @classmethod
    def paper(cls, pretrained: str | None = None) -> ModelConfig:
        """InceptionV3, last inception block trainable, trunk 2048-512-256, dropout 0.8, ImageNet stats."""
        return cls(
            backbone="inception_v3",
            trunk=PAPER_TRUNK,
            dropout=0.8,
            pretrained=pretrained,
            trainable_blocks=1 if pretrained else None,
            input_mean=IMAGENET_MEAN,
            input_std=IMAGENET_STD,
        )


class GuidedNet(nn.Module):
    """Backbone -> GAP -> dense trunk (ReLU + dropout) -> one head per task, keyed by task name.

    ``forward(x)`` takes float images in [0, 1], shape (B, 3, H, W), and returns ``{task: output}``:
    a logit (B,) for binary tasks, a value (B,) for regression, logits (B, K) for class tasks.
    """

    def __init__(
        self, tasks: Mapping[str, str | TaskSpec] | Sequence[TaskSpec], config: ModelConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.tasks = parse_tasks(tasks)
        cfg = self.config
        self.register_buffer("input_mean", torch.tensor(cfg.input_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(cfg.input_std, dtype=torch.float32).view(1, 3, 1, 1))
        self.backbone = create_backbone(cfg.backbone, cfg.pretrained)
        self.frozen_parameters = freeze_backbone(self.backbone, cfg.trainable_blocks)
        width = int(self.backbone.num_features)
        layers: list[nn.Module] = []
        for size in cfg.trunk:
            layers.append(
                nn.Sequential(nn.Linear(width, int(size)), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
            )
            width = int(size)
        self.trunk = nn.ModuleList(layers)
        self.embedding_dim = width
        self.heads = nn.ModuleDict()
        for name, spec in self.tasks.items():  # sorted by name -> init independent of listing order
            linear = nn.Linear(width, spec.out_features)
            self.heads[name] = nn.Sequential(GradientReversal(), linear) if spec.is_adversarial else linear

    # -- parameters ------------------------------------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters every task shares (backbone + trunk): what gradient methods act on."""
        return [p for p in [*self.backbone.parameters(), *self.trunk.parameters()] if p.requires_grad]

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self.heads[name].parameters())

    def set_reversal_strength(self, strength: float) -> None:
        """Set lambda of every gradient reversal layer."""
        for module in self.modules():
            if isinstance(module, GradientReversal):
                module.strength = float(strength)

    def train(self, mode: bool = True) -> GuidedNet:
        """Like ``nn.Module.train``, but modules whose parameters are all frozen stay in eval mode
        (their batch-norm statistics are frozen with them, as in Keras)."""
        super().train(mode)
        if mode and self.frozen_parameters:
            for module in self.backbone.modules():
                params = list(module.parameters(recurse=False))
                if params and not any(p.requires_grad for p in params):
                    module.eval()
        return self

    # -- forward ---------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations for probes: ``"backbone"`` (pooled conv features), ``"dense1"``.. and ``"shared"``
        (the layer the heads read)."""
        h = self.backbone((x - self.input_mean) / self.input_std)
        out = {"backbone": h}
        for i, layer in enumerate(self.trunk, start=1):
            h = layer(h)
            out[f"dense{i}"] = h
        out["shared"] = h
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.features(x)["shared"]
        outputs = {}
        for name, spec in self.tasks.items():
            y = self.heads[name](shared)
            outputs[name] = y if spec.kind == "adversarial-class" else y.squeeze(1)
        return outputs


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
