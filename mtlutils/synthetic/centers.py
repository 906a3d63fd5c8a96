"""Acquisition centers: their stain, scanner and tumour prevalence, and each slide's stain jitter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtlutils.synthetic.settings import DEFAULT_SETTINGS, GeneratorSettings


@dataclass(frozen=True, eq=False)
class CenterStyle:
    """One acquisition center: stain, scanner and tumour prevalence.

    ``stain_od``: (2, 3) optical-density unit vectors (rows hematoxylin, eosin; columns R, G, B),
    normalised on construction. ``intensity``: I0, the brightness of empty glass (0..255).
    ``stain_strength``: multiplies all concentrations. ``blur_sigma_um``: optical blur (Gaussian σ, µm).
    ``noise_std``: sensor noise (σ, 0..255 units). ``tumour_prevalence``: fraction of tumour slides.
    """

    name: str
    role: str  # "train" | "external"
    stain_od: np.ndarray
    intensity: float
    stain_strength: float
    blur_sigma_um: float
    noise_std: float
    tumour_prevalence: float
    jpeg_quality: int = 0  # scanner compression (JPEG quality 1..100; 0: lossless)

    def __post_init__(self) -> None:
        od = np.array(self.stain_od, dtype=np.float64)
        if od.shape != (2, 3) or not np.isfinite(od).all() or (od < 0).any():
            raise ValueError(
                f"CenterStyle {self.name!r}: stain_od must be a non-negative (2, 3) array (rows H, E), got shape {od.shape}"
            )
        norms = np.linalg.norm(od, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(
                f"CenterStyle {self.name!r}: a stain vector is all zero; give two non-zero OD vectors"
            )
        od = od / norms
        od.setflags(write=False)
        object.__setattr__(self, "stain_od", od)
        if self.role not in ("train", "external"):
            raise ValueError(f"CenterStyle {self.name!r}: role={self.role!r} must be 'train' or 'external'")
        if not 0 < self.intensity <= 255:
            raise ValueError(f"CenterStyle {self.name!r}: intensity={self.intensity} must be in (0, 255]")
        if not 0 <= self.tumour_prevalence <= 1:
            raise ValueError(
                f"CenterStyle {self.name!r}: tumour_prevalence={self.tumour_prevalence} must be in [0, 1]"
            )
        if not 0 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"CenterStyle {self.name!r}: jpeg_quality={self.jpeg_quality} must be in 0..100")
        if self.stain_strength <= 0 or self.blur_sigma_um < 0 or self.noise_std < 0:
            raise ValueError(
                f"CenterStyle {self.name!r}: stain_strength must be > 0, blur_sigma_um and noise_std >= 0"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (for cohort.json)."""
        return {
            "name": self.name,
            "role": self.role,
            "stain_od": np.round(self.stain_od, 6).tolist(),
            "intensity": float(self.intensity),
            "stain_strength": float(self.stain_strength),
            "blur_sigma_um": float(self.blur_sigma_um),
            "noise_std": float(self.noise_std),
            "tumour_prevalence": float(self.tumour_prevalence),
            "jpeg_quality": int(self.jpeg_quality),
        }


_CONFOUNDED_PREVALENCE = {"A": 0.8, "B": 0.5, "C": 0.2, "D": 0.5}


def default_centers(confounder: bool = True, settings: GeneratorSettings | None = None) -> list[CenterStyle]:
    """Training centers A, B, C and external center D.

    ``confounder=True``: the tumour prevalences of ``settings.prevalence`` in A / B / C (0.8 / 0.5 /
    0.2 in :data:`LEGACY`, 0.95 / 0.5 / 0.05 in :data:`HARD`: the stain predicts the label inside the
    training data). ``False`` (control): every training center gets their mean, 0.5. D (external,
    unseen stain) has 0.5 in both. ``settings`` (default :data:`DEFAULT_SETTINGS`) sets
    the prevalences, each center's JPEG quality and ``stain_gain``, which scales the training
    centers' differences from their mean stain (vectors, I0, strength).
    """
    settings = DEFAULT_SETTINGS if settings is None else settings
    confounded = dict(zip("ABCD", settings.prevalence, strict=True))
    train_mean = float(np.mean([confounded[c] for c in "ABC"]))

    def prev(name: str) -> float:
        return confounded[name] if (confounder or name == "D") else train_mean

    # rows: hematoxylin, eosin OD directions (R, G, B); I0, strength, blur µm, noise
    centers = [
        CenterStyle(
            "A", "train", [[0.56, 0.72, 0.41], [0.12, 0.84, 0.53]], 242.0, 1.00, 0.40, 3.0, prev("A")
        ),
        CenterStyle(
            "B", "train", [[0.52, 0.74, 0.43], [0.17, 0.86, 0.48]], 236.0, 1.15, 0.55, 3.5, prev("B")
        ),
        CenterStyle(
            "C", "train", [[0.59, 0.71, 0.38], [0.10, 0.82, 0.56]], 248.0, 0.85, 0.30, 2.5, prev("C")
        ),
        CenterStyle(
            "D", "external", [[0.78, 0.60, 0.18], [0.02, 0.55, 0.83]], 226.0, 1.25, 0.85, 5.0, prev("D")
        ),
    ]
    gain, quality = float(settings.stain_gain), dict(zip("ABCD", settings.jpeg_quality, strict=True))
    if gain == 1.0 and not any(quality.values()):
        return centers
    train = [c for c in centers if c.role == "train"]
    od0 = np.mean([c.stain_od for c in train], axis=0)
    i0, s0 = np.mean([c.intensity for c in train]), np.mean([c.stain_strength for c in train])
    out = []
    for c in centers:
        g = gain if c.role == "train" else 1.0
        out.append(
            dataclasses.replace(
                c,
                stain_od=np.clip(od0 + g * (c.stain_od - od0), 1e-3, None) if g != 1.0 else c.stain_od,
                intensity=float(np.clip(i0 + g * (c.intensity - i0), 150.0, 255.0)),
                stain_strength=float(max(s0 + g * (c.stain_strength - s0), 0.3)),
                jpeg_quality=int(quality[c.name]),
            )
        )
    return out


def get_center(
    center: str | CenterStyle, confounder: bool = True, settings: GeneratorSettings | None = None
) -> CenterStyle:
    """A :class:`CenterStyle` by name (``"A"`` … ``"D"``, styled by ``settings``, default
    :data:`DEFAULT_SETTINGS`), or ``center`` itself."""
    if isinstance(center, CenterStyle):
        return center
    centers = {c.name: c for c in default_centers(confounder, settings)}
    if center not in centers:
        raise ValueError(f"unknown center {center!r}; use one of {sorted(centers)} or pass a CenterStyle")
    return centers[center]


def _jitter_stain(rng: np.random.Generator, style: CenterStyle) -> tuple[np.ndarray, float]:
    """A slide's own stain: the center's vectors turned by ~1.5° and its strength scaled by ±6 %."""
    od = np.clip(style.stain_od + rng.normal(0.0, 0.025, size=(2, 3)), 1e-3, None)
    od /= np.linalg.norm(od, axis=1, keepdims=True)
    return od, style.stain_strength * float(rng.uniform(0.94, 1.06))
