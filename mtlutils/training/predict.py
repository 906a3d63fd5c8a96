"""Inference with a trained :class:`~mtlutils.models.GuidedNet`: per-task predictions and layer activations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mtlutils.models import GuidedNet
from mtlutils.training.inputs import prepare_images, to_float


@torch.inference_mode()
def forward_all(
    model: GuidedNet, images: torch.Tensor, batch_size: int, device: str, layers: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Raw outputs (or the activations of ``layers``) of ``model`` on uint8 ``images``, in batches, on CPU."""
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        out = model.features(x) if layers is not None else model(x)
        for key in layers if layers is not None else out:
            if key not in out:
                raise ValueError(f"layer {key!r} unknown; available: {list(out)}")
            chunks.setdefault(key, []).append(out[key].float().cpu())
    return {k: torch.cat(v) for k, v in chunks.items()}


def model_device(model: torch.nn.Module) -> str:
    """The device of the model's parameters (\"cpu\", \"cuda:0\", ...)."""
    return str(next(model.parameters()).device)


def predict(
    model: GuidedNet,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Predictions per task: probabilities for binary tasks, values for regression, class probabilities
    (N, K) for class tasks (columns ordered as ``FitResult.classes[name]``). Images: uint8, already resized."""
    images = prepare_images(images)
    raw = forward_all(model, images, batch_size, model_device(model))
    out = {}
    for name, spec in model.tasks.items():
        value = raw[name]
        if spec.kind == "binary":
            value = torch.sigmoid(value)
        elif spec.kind == "adversarial-class":
            value = torch.softmax(value, dim=1)
        out[name] = value.numpy()
    return out


def embed(
    model: GuidedNet,
    images: np.ndarray | torch.Tensor,
    layers: Sequence[str] = ("backbone", "shared"),
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Activations of ``layers`` ("backbone" = pooled conv features, "dense1".., "shared") for probes/UMAP."""
    images = prepare_images(images)
    raw = forward_all(model, images, batch_size, model_device(model), layers=list(layers))
    return {k: v.numpy() for k, v in raw.items()}
