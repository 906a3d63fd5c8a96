"""Feature extractors: the local tiny/small ConvNets, timm models, local weight loading and freezing."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

HEAD_PREFIXES = ("head", "fc", "classifier", "norm", "fc_norm", "conv_head", "bn2", "global_pool")


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
