"""The generator's tissue model: nucleus types, their parameters, densities and the TME score."""

from __future__ import annotations

from scipy import special

NUCLEUS_TYPES = ("normal", "stromal", "lymphocyte", "tumour", "germinal", "mantle", "histiocyte", "crushed")
NUCLEI_COLUMNS = ("x_px", "y_px", "area_um2", "type", "intensity")

# ---- nuclei (µm², relative hematoxylin load); see the module docstring ----------------------------
NUCLEUS_PARAMS: dict[str, dict[str, float]] = {
    "normal": dict(
        area=40.0,
        cv=0.15,
        ratio_lo=1.2,
        ratio_hi=1.7,
        intensity=1.0,
        intensity_sd=0.08,
        texture=0.15,
        coarse=0.0,
        rim=0.0,
        nucleolus=0.0,
        irregular=0.03,
    ),
    "stromal": dict(
        area=30.0,
        cv=0.20,
        ratio_lo=2.5,
        ratio_hi=4.0,
        intensity=1.05,
        intensity_sd=0.08,
        texture=0.08,
        coarse=0.0,
        rim=0.0,
        nucleolus=0.0,
        irregular=0.02,
    ),
    "lymphocyte": dict(
        area=24.0,
        cv=0.12,
        ratio_lo=1.0,
        ratio_hi=1.15,
        intensity=1.45,
        intensity_sd=0.08,
        texture=0.05,
        coarse=0.0,
        rim=0.0,
        nucleolus=0.0,
        irregular=0.02,
    ),
}
GLAND_NUCLEUS_SPACING_UM = 7.5
GLAND_SPACING_UM = 210.0  # ducts: hexagonal lattice, thinned by a smooth field
LOBULE_SPACING_UM = 450.0  # lobules: clusters of acini, radius 80–160 µm
LOBULE_PROBABILITY = 0.45
ACINUS_SPACING_UM = 40.0
STROMA_NUCLEI_PER_MM2 = 900.0
TUMOUR_STROMA_NUCLEI_PER_MM2 = 1800.0
LYMPH_BASE_PER_MM2 = 150.0
LYMPH_TME_PER_MM2 = 2600.0
LYMPH_IN_EPITHELIUM = 0.25
LYMPH_MIN_GAP_UM = 5.0  # lymphocyte centres at least this far apart (packed aggregates stay possible)
NUCLEUS_MIN_GAP_UM = 6.0  # no lymphocyte centred closer than this to another nucleus
TME_SLOPE = 1.8  # logit of the TME score = TME_SLOPE * (biomarker - 0.5) + TME_NOISE * N(0, 1)
TME_NOISE = 1.0
H_NUCLEUS = 1.8  # hematoxylin concentration of a nucleus of intensity 1
E_NUCLEUS = 0.18  # eosin left inside a nucleus


def normal_nucleus_params(activity: float, reactive_gain: float = 0.0) -> dict[str, float]:
    """Normal epithelial nuclear parameters of a gland or lobule with ``activity`` in [0, 1].

    Resting (0) to active/reactive (1) epithelium: mean area 34–50 µm², a little darker when active.
    ``reactive_gain`` in [0, 1] moves active nuclei toward grade-0.5 tumour nuclei (area 72 µm², CV
    0.3, intensity 1.25, coarser chromatin, nucleoli): reactive atypia.
    """
    a, k = float(activity), float(reactive_gain) * float(activity)
    base = {**NUCLEUS_PARAMS["normal"], "area": 34.0 + 16.0 * a, "intensity": 0.95 + 0.1 * a}
    if k == 0.0:
        return base
    target = tumour_nucleus_params(0.5)
    out = {name: base[name] + k * (target[name] - base[name]) for name in base}
    out["area"] = base["area"] + k * (target["area"] - 50.0)
    return out


def tumour_nucleus_params(grade: float) -> dict[str, float]:
    """Tumour nuclear parameters at ``grade`` in [0, 1] (areas µm², density per mm² of epithelium)."""
    g = float(grade)
    return dict(
        area=42.0 + 60.0 * g,
        cv=0.18 + 0.25 * g,
        ratio_lo=1.0,
        ratio_hi=1.3 + 0.5 * g,
        intensity=1.05 + 0.4 * g,
        intensity_sd=0.08 + 0.10 * g,
        texture=0.12 + 0.2 * g,
        coarse=g,
        rim=0.5 * g,
        nucleolus=0.5 * g,
        irregular=0.04 + 0.12 * g,
        density=3800.0 + 1700.0 * g,
    )


def tumour_area_fraction(prevalence: float) -> float:
    """Mean fraction of a tumour slide's tissue inside tumour regions at a center's ``prevalence``."""
    return 0.10 + 0.5 * float(prevalence)


def tme_from_biomarker(biomarker: int, z: float) -> float:
    """TME score in [0, 1] from the binary biomarker and a standard-normal draw ``z``."""
    return float(special.expit(TME_SLOPE * (int(biomarker) - 0.5) + TME_NOISE * float(z)))
