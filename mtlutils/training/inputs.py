"""Images as the model takes them: uint8 (N, 3, H, W) tensors resized once, random flips, floats in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def prepare_images(
    images: np.ndarray | torch.Tensor, size: int | None = None, chunk: int = 512
) -> torch.Tensor:
    """uint8 (N, H, W, 3) array -> uint8 tensor (N, 3, size, size), resized once (antialiased bilinear).

    Do this once in the data step: e.g. 224 px at 0.5 um/px -> 64 px at 1.75 um/px. Already
    channels-first uint8 tensors pass through (resized if ``size`` differs).
    """
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0-255), got {x.dtype}; convert with .astype('uint8')")
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        if x.shape[-1] != 3:
            raise ValueError(f"images must have 3 colour channels, got shape {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    if size is None or (x.shape[2] == size and x.shape[3] == size):
        return x.contiguous()
    out = torch.empty((x.shape[0], 3, size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].float()
        block = F.interpolate(block, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = block.round().clamp_(0, 255).to(torch.uint8)
    return out


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random dihedral transform per image (flips and, for square images, transposes)."""
    n = x.shape[0]
    flips = torch.rand((3, n), generator=generator) < 0.5
    flips = flips.to(x.device)
    x = torch.where(flips[0].view(-1, 1, 1, 1), x.flip(3), x)
    x = torch.where(flips[1].view(-1, 1, 1, 1), x.flip(2), x)
    if x.shape[2] == x.shape[3]:
        x = torch.where(flips[2].view(-1, 1, 1, 1), x.transpose(2, 3), x)
    return x


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (a new tensor)."""
    return x.float().div_(255.0)
