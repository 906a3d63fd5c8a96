"""Layer activations captured by forward hooks, in batches, keeping only the requested layers."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from mtlutils.training.inputs import prepare_images, to_float
from mtlutils.training.predict import model_device


def guided_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The probe layers of a :class:`~mtlutils.models.GuidedNet`: ``"gap"`` (the pooled backbone) and
    ``"shared"`` (the last trunk layer, the one the heads read)."""
    return {"gap": model.backbone, "shared": model.trunk[-1] if len(model.trunk) else model.backbone}


def pooled(value: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) maps averaged over space (global average pooling); other shapes flattened per row."""
    if value.ndim == 4:
        return value.mean(dim=(2, 3))
    return value.reshape(value.shape[0], -1)


@torch.inference_mode()
def capture(
    model: nn.Module,
    images,
    layers: Mapping[str, nn.Module],
    batch_size: int = 128,
) -> dict[str, np.ndarray]:
    """Outputs of ``layers`` ({name: submodule}) on uint8 ``images`` (N, 3, H, W), pooled per row, as
    (N, d) float32 arrays. Forward hooks copy each batch's output to the CPU and drop it, so no other
    activation of the network is kept; the hooks are removed even when the forward pass fails."""
    images = prepare_images(images)
    device = model_device(model)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            chunks[name].append(pooled(output).float().cpu().numpy())

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            model(to_float(images[start : start + batch_size].to(device)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}
