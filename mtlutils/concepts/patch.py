"""The table of named concepts (unit, description) and the concepts of one patch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mtlutils.concepts.features import glcm_features, grey_levels, nuclei_properties
from mtlutils.concepts.params import DEFAULT_PARAMS, SegmentationParams, check_image, check_mpp
from mtlutils.concepts.segment import segment_with_maps

if TYPE_CHECKING:  # pandas is imported lazily: worker processes do not need it
    import pandas as pd


class ConceptInfo(NamedTuple):
    """Unit and one-line description of a concept."""

    unit: str
    description: str


CONCEPTS: dict[str, ConceptInfo] = {
    "count": ConceptInfo("nuclei/mm²", "nuclei density: segmented nuclei per mm² of tissue in the patch"),
    "area": ConceptInfo("µm²", "mean nuclear area (pixels inside each nuclear contour × mpp²)"),
    "area_cv": ConceptInfo("1", "size pleomorphism: coefficient of variation (SD/mean) of nuclear areas"),
    "eccentricity_sd": ConceptInfo(
        "1", "shape pleomorphism: SD of nuclear eccentricity (0 = circle, 1 = line)"
    ),
    "hematoxylin": ConceptInfo("OD", "mean hematoxylin optical density inside nuclei (chromatin staining)"),
    "contrast": ConceptInfo(
        "levels²", "Haralick contrast of the whole patch (grey, 32 levels, d=1, 4 angles)"
    ),
    "correlation": ConceptInfo(
        "1", "Haralick correlation of the whole patch (grey, 32 levels, d=1, 4 angles)"
    ),
    "nuclear_contrast": ConceptInfo("levels²", "Haralick contrast of pixel pairs inside the same nucleus"),
    "nuclear_correlation": ConceptInfo("1", "Haralick correlation of pixel pairs inside the same nucleus"),
}

QC_FIELDS: dict[str, ConceptInfo] = {
    "n_nuclei": ConceptInfo("nuclei", "number of segmented nuclei in the patch"),
    "tissue_fraction": ConceptInfo("1", "fraction of the patch covered by tissue (optical-density mask)"),
    "no_tissue": ConceptInfo(
        "flag", "tissue_fraction < min_tissue_fraction: every concept but the patch texture is NaN"
    ),
    "no_nuclei": ConceptInfo("flag", "tissue but no nucleus found: count is 0, nuclear concepts are NaN"),
}

#: Concepts that need at least two nuclei (a spread of one value is undefined).
_NEEDS_TWO = ("area_cv", "eccentricity_sd")
#: Concepts measured on nuclei (NaN without nuclei).
_NUCLEAR = ("area", "area_cv", "eccentricity_sd", "hematoxylin", "nuclear_contrast", "nuclear_correlation")


def concept_table() -> pd.DataFrame:
    """The concepts and quality-control fields as a table (name, kind, unit, description)."""
    import pandas as pd

    rows = [(name, "concept", *info) for name, info in CONCEPTS.items()]
    rows += [(name, "qc", *info) for name, info in QC_FIELDS.items()]
    return pd.DataFrame(rows, columns=["name", "kind", "unit", "description"])


CONCEPT_COLUMNS: tuple[str, ...] = (*CONCEPTS, *QC_FIELDS)


def _concepts_from_segmentation(
    image: np.ndarray,
    labels: np.ndarray,
    extras: Mapping[str, np.ndarray],
    mpp: float,
    params: SegmentationParams,
) -> dict[str, Any]:
    tissue = extras["tissue"]
    tissue_fraction = float(tissue.mean())
    grey = grey_levels(image)
    contrast, correlation = glcm_features(grey)
    out: dict[str, Any] = dict.fromkeys(CONCEPTS, math.nan)
    out.update(contrast=contrast, correlation=correlation)
    n = int(labels.max())
    out["n_nuclei"] = n
    out["tissue_fraction"] = tissue_fraction
    out["no_tissue"] = tissue_fraction < params.min_tissue_fraction
    out["no_nuclei"] = (not out["no_tissue"]) and n == 0
    if out["no_tissue"]:
        return out
    tissue_mm2 = float(tissue.sum()) * mpp * mpp * 1e-6
    out["count"] = n / tissue_mm2
    if n == 0:
        return out
    props = nuclei_properties(labels, mpp, extras["h"])
    areas = props["area_um2"]
    out["area"] = float(areas.mean())
    out["hematoxylin"] = float(props["hematoxylin"].mean())
    if n >= 2:
        out["area_cv"] = float(areas.std(ddof=1) / areas.mean())
        out["eccentricity_sd"] = float(props["eccentricity"].std(ddof=1))
    out["nuclear_contrast"], out["nuclear_correlation"] = glcm_features(grey, regions=labels)
    return out


def patch_concepts(
    image: np.ndarray, mpp: float, params: SegmentationParams = DEFAULT_PARAMS, return_labels: bool = False
) -> dict[str, Any] | tuple[dict[str, Any], np.ndarray]:
    """Named concepts of one RGB uint8 patch at ``mpp`` µm/px (see :data:`CONCEPTS`, :data:`QC_FIELDS`).

    Returns a dict with every concept (float, NaN when undefined) and the QC fields ``n_nuclei``,
    ``tissue_fraction``, ``no_tissue``, ``no_nuclei``. With ``return_labels=True`` also returns the
    nuclei label image, for overlays.
    """
    image = check_image(image)
    mpp = check_mpp(mpp, params)
    labels, extras = segment_with_maps(image, mpp, params)
    out = _concepts_from_segmentation(image, labels, extras, mpp, params)
    return (out, labels) if return_labels else out
