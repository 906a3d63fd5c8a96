"""The guided CNN: :class:`ModelConfig` and :class:`GuidedNet` (backbone -> trunk -> one head per task)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtlutils.models.adversary import AdversaryConfig, AdversaryHead
from mtlutils.models.backbones import create_backbone, freeze_backbone
from mtlutils.models.reversal import GradientReversal
from mtlutils.models.tasks import TaskSpec, parse_tasks

PAPER_TRUNK = (2048, 512, 256)  # paper A, section 3.5 (dropout 0.8, L2 0.01 on these layers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    adversary: AdversaryConfig = AdversaryConfig()  # head(s) and objective of adversarial tasks

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
            if spec.is_adversarial:
                self.heads[name] = AdversaryHead(width, spec.out_features, cfg.adversary)
            else:
                self.heads[name] = nn.Linear(width, spec.out_features)

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

    def adversaries(self) -> dict[str, AdversaryHead]:
        """The adversarial heads by task name."""
        return {n: h for n, h in self.heads.items() if isinstance(h, AdversaryHead)}

    def head_outputs(
        self, shared: torch.Tensor, condition: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every head's output on the shared layer; adversarial heads see ``condition`` (tumour label codes)."""
        outputs = {}
        for name, spec in self.tasks.items():
            if spec.is_adversarial:
                outputs[name] = self.heads[name](shared, condition)
            else:
                outputs[name] = self.heads[name](shared).squeeze(1)
        return outputs

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.head_outputs(self.features(x)["shared"], condition)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
