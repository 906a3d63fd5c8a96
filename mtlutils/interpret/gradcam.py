"""Grad-CAM: where in the image a scalar output's evidence sits, from a conv layer's maps and gradients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlutils.training.inputs import prepare_images, to_float
from mtlutils.training.predict import model_device


def last_conv_block(model: nn.Module) -> nn.Module:
    """The block holding the network's last ``Conv2d`` (its parent, so that the maps are taken after
    its normalisation and ReLU), or the convolution itself when it has no parent block."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError("Grad-CAM needs a model with a Conv2d layer")
    parent = names[-1].rpartition(".")[0]
    return model.get_submodule(parent) if parent else model.get_submodule(names[-1])


def task_output(task: str) -> Callable[[object], torch.Tensor]:
    """A selector of one scalar per image from a model's output: ``out[task]`` of a dict of heads."""
    return lambda out: out[task]


def gradcam(
    model: nn.Module,
    images,
    output: Callable[[object], torch.Tensor] | None = None,
    layer: nn.Module | None = None,
) -> np.ndarray:
    """(N, H, W) Grad-CAM maps in [0, 1] of the scalar ``output(model(x))`` ((N,) per image; default the
    model's output itself) at ``layer`` (default :func:`last_conv_block`), bilinearly upsampled to the
    image size: ReLU(sum_k mean(dy/dA_k) A_k), divided by each map's maximum (all 0 when no evidence)."""
    images = prepare_images(images)
    layer = layer if layer is not None else last_conv_block(model)
    output = output or (lambda out: out)
    kept: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, value):
        value.retain_grad()
        kept["maps"] = value

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        x = to_float(images.to(model_device(model)))
        model.zero_grad(set_to_none=True)
        y = output(model(x)).reshape(x.shape[0], -1).sum()
        y.backward()
    finally:
        handle.remove()
        model.train(was_training)
    maps, grads = kept["maps"].detach(), kept["maps"].grad.detach()
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * maps).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / top).cpu().numpy()


def cam_figure(images, maps: dict[str, np.ndarray], points=None, titles=None, name: str | None = None):
    """Rows = images (uint8 (N, 3, H, W)), columns = the image then each map of ``maps`` ({head: (N, H, W)})
    laid over it; ``points``: per image an (K, 2) array of x, y pixel positions (e.g. true nuclei centres)."""
    import matplotlib.pyplot as plt

    from mtlutils.plotting import save_figure

    images = prepare_images(images).permute(0, 2, 3, 1).numpy()
    n, cols = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), squeeze=False)
    for i in range(n):
        for j, (head, cam) in enumerate([("image", None), *maps.items()]):
            ax = axes[i, j]
            ax.imshow(images[i])
            if cam is not None:
                ax.imshow(cam[i], cmap="inferno", alpha=0.5, vmin=0, vmax=1)
            if points is not None and len(points[i]):
                ax.scatter(*np.asarray(points[i]).T, s=6, c="#56B4E9", edgecolors="black", linewidths=0.3)
            ax.set_axis_off()
            ax.set_title(head if titles is None or j else f"{head}: {titles[i]}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
