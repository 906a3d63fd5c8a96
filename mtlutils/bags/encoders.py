"""Frozen patch encoders (tiles -> feature vectors): nuclei/colour statistics, a random CNN, any timm model."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from mtlutils.core.provenance import source_hash as _source_hash

#: Encoders that run offline with no download. ``timm:<model name>`` needs a local weights file (path).
ENCODERS = ("stats", "random_cnn")
#: The default, chosen by a held-out linear probe of tile lymphocyte density and tumour status
#: (:func:`mtlutils.bags.probe.compare_encoders`; figures in the README and notebook 04).
DEFAULT_ENCODER = "stats"
AREA_BINS_UM2 = (0.0, 12.0, 20.0, 32.0, 50.0, 80.0, np.inf)


class Encoder:
    """A frozen tile encoder: ``encode((n, px, px, 3) uint8) -> (n, dim) float32``; ``name`` and
    ``code_hash`` (of its source and weights) go into every feature file it writes."""

    name = "encoder"
    dim = 0
    code_hash = ""

    def encode(self, tiles: np.ndarray, mpp: float) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class StatsEncoder(Encoder):
    """Hand-crafted colour and nuclei statistics (34-d): optical density per channel (mean, sd), the
    hematoxylin channel's quantiles, and from an Otsu mask of the hematoxylin channel the density of
    nuclei (per mm²) by area bin (µm²) and by shape (round: eccentricity < 0.75), their mean area, and
    the mean hematoxylin of round small (lymphocyte-sized) nuclei relative to all nuclei."""

    name = "stats"
    dim = 34

    def __init__(self) -> None:
        self.code_hash = _source_hash(StatsEncoder, AREA_BINS_UM2)

    def encode(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        return (
            np.stack([self._one(t, mpp) for t in tiles]).astype(np.float32)
            if len(tiles)
            else np.zeros((0, self.dim), np.float32)
        )

    @staticmethod
    def _one(tile: np.ndarray, mpp: float) -> np.ndarray:
        from scipy import ndimage
        from skimage.color import rgb2hed
        from skimage.filters import threshold_otsu

        od = -np.log((tile.astype(np.float32) + 1.0) / 256.0)
        h = rgb2hed(tile)[..., 0]
        area_mm2 = tile.shape[0] * tile.shape[1] * (mpp * 1e-3) ** 2
        colour = np.r_[od.mean((0, 1)), od.std((0, 1)), np.percentile(h, [10, 25, 50, 75, 90, 95, 99])]
        thr = threshold_otsu(h) if np.ptp(h) > 0 else np.inf
        labels, n = ndimage.label(h > thr)
        area, ecc, mean_i = _blob_shapes(labels, n, h)
        area = area * mpp * mpp
        round_ = ecc < 0.75
        counts_all = np.histogram(area, AREA_BINS_UM2)[0]
        counts_round = np.histogram(area[round_], AREA_BINS_UM2)[0]
        small = round_ & (area >= 12) & (area < 40)
        mean_h = mean_i.mean() if n else 0.0
        extra = np.r_[
            n / area_mm2 / 1000.0,
            area.mean() if n else 0.0,
            (h > thr).mean(),
            small.sum() / area_mm2 / 1000.0,
            mean_i[small].mean() / mean_h if small.any() and mean_h > 0 else 1.0,
            np.log1p(small.sum()),
        ]
        density = np.r_[counts_all, counts_round] / area_mm2 / 1000.0  # thousands per mm²
        return np.r_[colour, density, extra, np.log1p(counts_round[1:4])]


def _blob_shapes(labels: np.ndarray, n: int, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area (px), eccentricity (of the second moments) and mean intensity of blobs 1..n of ``labels``."""
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    flat = labels.ravel()
    rows, cols = np.indices(labels.shape)
    sums = [np.bincount(flat, w, minlength=n + 1)[1:] for w in (None, rows.ravel(), cols.ravel())]
    area, my, mx = sums[0], sums[1] / sums[0], sums[2] / sums[0]
    second = [
        np.bincount(flat, w, minlength=n + 1)[1:] / area for w in (rows.ravel() ** 2, cols.ravel() ** 2)
    ]
    cross = np.bincount(flat, (rows * cols).ravel(), minlength=n + 1)[1:] / area - my * mx
    vy, vx = second[0] - my**2 + 1 / 12, second[1] - mx**2 + 1 / 12
    root = np.sqrt(((vy - vx) / 2) ** 2 + cross**2)
    big, small_ = (vy + vx) / 2 + root, np.maximum((vy + vx) / 2 - root, 0.0)
    ecc = np.sqrt(np.clip(1 - small_ / np.maximum(big, 1e-12), 0.0, 1.0))
    mean_i = np.bincount(flat, image.ravel(), minlength=n + 1)[1:] / area
    return area, ecc, mean_i


class RandomCNNEncoder(Encoder):
    """A randomly initialised (seeded, never trained) 4-block CNN on optical density; global mean and
    max pooling of the last block (256-d). The classic "random features" baseline."""

    name = "random_cnn"
    dim = 256

    def __init__(self, seed: int = 0) -> None:
        import torch
        from torch import nn

        gen = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for c_in, c_out in ((3, 16), (16, 32), (32, 64), (64, 128)):
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (9 * c_in)) ** 0.5)
                conv.bias.zero_()
            layers += [conv, nn.ReLU()]
        self.net = nn.Sequential(*layers).eval()
        self.code_hash = _source_hash(RandomCNNEncoder, seed)

    def encode(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        import torch

        x = -torch.log((torch.as_tensor(np.asarray(tiles)).float() + 1.0) / 256.0).permute(0, 3, 1, 2)
        with torch.no_grad():
            z = self.net(x)
            out = torch.cat([z.mean((2, 3)), z.amax((2, 3))], dim=1)
        return out.numpy().astype(np.float32)


class TimmEncoder(Encoder):
    """Any ``timm`` model with local weights (``timm:<name>`` + ``path`` to a state dict): pooled
    features (``num_classes=0``), inputs resized to the model's size and normalised with its mean/sd."""

    def __init__(self, model_name: str, path: str | Path) -> None:
        import timm
        import torch

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {path} for timm model {model_name!r} not found; pass its path"
            )
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing = self.model.load_state_dict(
            state, strict=False
        ).missing_keys  # a classifier head may be extra
        if missing:
            raise ValueError(
                f"weights file {path} lacks {len(missing)} parameters of {model_name!r} (e.g. {missing[0]}); "
                "is it the right model?"
            )
        self.model.eval()
        cfg = self.model.pretrained_cfg
        self.size = int(cfg.get("input_size", (3, 224, 224))[-1])
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
        self.name, self.dim = f"timm:{model_name}", int(self.model.num_features)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        self.code_hash = f"{_source_hash(TimmEncoder)}-{digest}"

    def encode(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.as_tensor(np.asarray(tiles)).float().permute(0, 3, 1, 2) / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return self.model((x - self.mean) / self.std).numpy().astype(np.float32)


@functools.lru_cache(maxsize=4)
def get_encoder(name: str = DEFAULT_ENCODER, path: str | None = None) -> Encoder:
    """The encoder called ``name`` (see :data:`ENCODERS`, or ``timm:<model>`` with ``path``), built once."""
    if name == "stats":
        return StatsEncoder()
    if name == "random_cnn":
        return RandomCNNEncoder()
    if name.startswith("timm:"):
        if path is None:
            raise ValueError(f"encoder {name!r} needs a local weights file: pass --encoder-path / path=")
        return TimmEncoder(name.split(":", 1)[1], path)
    raise ValueError(
        f"encoder {name!r} is not one of {ENCODERS} or 'timm:<model name>' (with a weights path)"
    )
