"""The generator's difficulty settings (every option with its ground truth) and their hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

#: bump when the generator's output for given settings changes (also part of the generator hash)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GeneratorSettings:
    """Options that set how hard the tumour task is. The field defaults give the original cohort (LEGACY).

    Morphology: ``grade_range`` (tumour grade ~ U(lo, hi)); ``activity_range`` (normal duct/lobule
    activity ~ U(lo, hi)); ``reactive_gain`` (0..1: how far activity-1 normal nuclei move toward
    grade-0.5 tumour nuclei in area, CV and darkness); ``shared_cytoplasm`` (tumour cytoplasm stained
    as normal epithelium); ``lobule_probability`` (share of lobule sites kept: epithelium-rich normal
    tissue); ``tumour_epithelium`` (epithelial share of a grade-0 tumour region, 0.55 originally).
    Mimics (benign, outside tumour; nuclei typed germinal/mantle/histiocyte/crushed): ``mimics_per_mm2``
    (expected mimic foci per mm² of normal tissue). Annotations (the XML; the exact regions go to
    ``truth/``): ``annotation_dilate_um`` (outline pushed out by this), ``annotation_vertices``
    (outline simplified to this many vertices, 0: exact), ``unannotated_foci`` (small tumour foci per
    tumour slide left out of the XML). Scanner: ``focus_blur_um`` (extra blur σ per slide, U(0, this)
    in µm), ``jpeg_quality`` (per center A..D, 0: lossless). Shortcut: ``prevalence`` (tumour slide
    rate of A, B, C, D), ``stain_gain`` (multiplies the centers' stain differences from their mean).
    """

    grade_range: tuple[float, float] = (0.0, 1.0)
    activity_range: tuple[float, float] = (0.0, 1.0)
    reactive_gain: float = 0.0
    shared_cytoplasm: bool = False
    lobule_probability: float = 0.45
    tumour_epithelium: float = 0.55
    mimics_per_mm2: float = 0.0
    annotation_dilate_um: float = 0.0
    annotation_vertices: int = 0
    unannotated_foci: float = 0.0
    focus_blur_um: float = 0.0
    jpeg_quality: tuple[int, int, int, int] = (0, 0, 0, 0)
    prevalence: tuple[float, float, float, float] = (0.8, 0.5, 0.2, 0.5)
    stain_gain: float = 1.0

    def __post_init__(self) -> None:
        for name in ("grade_range", "activity_range"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"GeneratorSettings.{name}={(lo, hi)} must satisfy 0 <= lo <= hi <= 1")
        for name in ("reactive_gain", "lobule_probability", "tumour_epithelium"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"GeneratorSettings.{name}={getattr(self, name)} must be in [0, 1]")
        if any(not 0.0 <= p <= 1.0 for p in self.prevalence) or len(self.prevalence) != 4:
            raise ValueError(f"GeneratorSettings.prevalence={self.prevalence} needs 4 values in [0, 1]")
        if len(self.jpeg_quality) != 4 or any(not 0 <= q <= 100 for q in self.jpeg_quality):
            raise ValueError(f"GeneratorSettings.jpeg_quality={self.jpeg_quality} needs 4 values in 0..100")
        for name in ("mimics_per_mm2", "annotation_dilate_um", "unannotated_foci", "focus_blur_um"):
            if getattr(self, name) < 0:
                raise ValueError(f"GeneratorSettings.{name}={getattr(self, name)} must be >= 0")
        if self.stain_gain <= 0 or self.annotation_vertices < 0:
            raise ValueError("GeneratorSettings: stain_gain must be > 0 and annotation_vertices >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GeneratorSettings:
        """The settings of a ``to_dict`` (e.g. read back from cohort.json)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown generator setting(s) {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


#: the original cohort (every new option off)
LEGACY = GeneratorSettings()

#: the calibrated, harder cohort (issue 8, candidate c7): its card (seed 0, 36 slides per center of
#: 1024 px, 224-px tiles at 0.5 µm/px) meets every band of :data:`mtlutils.synthetic.card.BANDS`
HARD = GeneratorSettings(
    grade_range=(0.0, 0.8),
    activity_range=(0.0, 1.0),
    reactive_gain=0.45,
    shared_cytoplasm=True,
    lobule_probability=0.8,
    tumour_epithelium=0.45,
    mimics_per_mm2=12.0,
    annotation_dilate_um=25.0,
    annotation_vertices=14,
    unannotated_foci=1.5,
    focus_blur_um=0.6,
    jpeg_quality=(85, 70, 92, 60),
    prevalence=(0.95, 0.5, 0.05, 0.5),
    stain_gain=2.1,
)

#: the frozen default: every cohort of the tutorial is generated with it
DEFAULT_SETTINGS = HARD


def generator_hash(settings: GeneratorSettings | None = None) -> str:
    """12 hex digits of SHA-256 over the settings and :data:`FORMAT_VERSION`: names the generator."""
    settings = DEFAULT_SETTINGS if settings is None else settings
    payload = json.dumps({"format_version": FORMAT_VERSION, **settings.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
