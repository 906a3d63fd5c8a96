"""Nuclei segmentation and the diagnostic concepts of paper A, computed without any deep model.

A pathologist judges a patch by how many nuclei it holds, how large and how varied they are, how dark
they stain and how the tissue looks. This module measures those *concepts* on any RGB H&E image:

1. :func:`segment_nuclei` — tissue = stained pixels (optical density with colour, so neither white
   nor grey glass); colour deconvolution to the hematoxylin (H) optical density; an adaptive threshold
   (Otsu on H within the tissue, plus a local-contrast test that finds pale nuclei); small
   morphology; a watershed on a distance map (distance to background summed over the mask and two
   darker cores, so a pale gap between dark nuclei is a neck) that keeps two nuclei apart wherever
   the neck between them is deeper than ``split_depth_um``; finally each nucleus's edge is placed
   half-way (``edge_level``) between the background H and its own peak H, so areas are unbiased.
   Every size is a physical length or area (:class:`SegmentationParams`), so the same call works at
   0.25 µm/px (40x) and 0.5 µm/px (20x); nothing depends on absolute RGB values.
2. :func:`patch_concepts` — one dict of named concepts per patch (table :data:`CONCEPTS`: name →
   unit, description) plus quality-control fields (:data:`QC_FIELDS`). Missing is NaN, never a
   made-up constant: a patch without nuclei has ``count`` 0, ``area`` NaN and ``no_nuclei`` True.
3. :func:`extract_concepts` (arrays) and :func:`extract_patch_dir_concepts` (a patch dataset folder
   from ``mtlutils.data.tile_cohort``) — batch extraction in worker processes with one thread
   each, cached per slide, resumable, written atomically.
4. :class:`ConceptScaler` — z-scores fitted on the training split only (NaN-aware), stored as JSON.
5. What the concepts track: :func:`read_concept_dataset` (concepts joined with labels and coordinates),
   :func:`concept_label_association` (desired: AUC for tumour vs normal, pooled and within each
   center), :func:`concept_center_association` (undesired: eta² and Kruskal–Wallis, optionally
   stratified by label so that a center's tumour prevalence is not mistaken for a center effect),
   :func:`ground_truth_agreement` (Spearman with known values) and :func:`normalisation_effect`.

Haralick texture uses a symmetric grey-level co-occurrence matrix (GLCM) of the grey image quantised
to 32 levels, distance 1 px, angles 0°, 45°, 90°, 135°; each property is averaged over the 4 angles
(identical to ``skimage.feature.graycomatrix`` + ``graycoprops``, but computed with ``bincount`` so
that it can be restricted to pixel pairs inside the same nucleus).

Modules: :mod:`~mtlutils.concepts.params` (settings, input checks), :mod:`~mtlutils.concepts.deconvolution`
(optical density, hematoxylin, tissue mask), :mod:`~mtlutils.concepts.segment`,
:mod:`~mtlutils.concepts.features` (nucleus properties, GLCM), :mod:`~mtlutils.concepts.patch` (the
concept table, one patch), :mod:`~mtlutils.concepts.extract` (batches, cache, CLI),
:mod:`~mtlutils.concepts.scaler`, :mod:`~mtlutils.concepts.association` and
:mod:`~mtlutils.concepts.pannuke` (agreement with PanNuke's annotated nuclei),
:mod:`~mtlutils.concepts.instances` (:func:`instance_agreement`: matches at IoU ≥ 0.5, merges, splits)
and :mod:`~mtlutils.concepts.realdata` (annotated real nuclei: split, scoring).
"""

from __future__ import annotations

from mtlutils.concepts.association import (
    CLASS_NAMES,
    concept_center_association,
    concept_label_association,
    ground_truth_agreement,
    normalisation_effect,
    read_concept_dataset,
)
from mtlutils.concepts.deconvolution import _HED_FROM_RGB as _HED_FROM_RGB  # the tests re-stain with these
from mtlutils.concepts.deconvolution import _RGB_FROM_HED as _RGB_FROM_HED
from mtlutils.concepts.deconvolution import hematoxylin_od, tissue_mask
from mtlutils.concepts.extract import (
    CACHE_DIR,
    CONCEPTS_FILE,
    CONCEPTS_VERSION,
    SCALER_FILE,
    extract_concepts,
    extract_concepts_cli,
    extract_patch_dir_concepts,
    read_concepts,
)
from mtlutils.concepts.features import GLCM_LEVELS, glcm_features, nuclei_properties
from mtlutils.concepts.instances import instance_agreement
from mtlutils.concepts.params import DEFAULT_PARAMS, MIN_SIDE_PX, SegmentationParams
from mtlutils.concepts.patch import (
    _NUCLEAR as _NUCLEAR,  # the tests check these are NaN without nuclei
)
from mtlutils.concepts.patch import (
    CONCEPT_COLUMNS,
    CONCEPTS,
    QC_FIELDS,
    ConceptInfo,
    concept_table,
    patch_concepts,
)
from mtlutils.concepts.scaler import ConceptScaler
from mtlutils.concepts.segment import segment_nuclei
from mtlutils.data.index import patch_dir_mpp

__all__ = [
    "CACHE_DIR",
    "CLASS_NAMES",
    "CONCEPTS",
    "CONCEPTS_FILE",
    "CONCEPTS_VERSION",
    "CONCEPT_COLUMNS",
    "DEFAULT_PARAMS",
    "GLCM_LEVELS",
    "MIN_SIDE_PX",
    "QC_FIELDS",
    "SCALER_FILE",
    "ConceptInfo",
    "ConceptScaler",
    "SegmentationParams",
    "concept_center_association",
    "concept_label_association",
    "concept_table",
    "extract_concepts",
    "extract_concepts_cli",
    "extract_patch_dir_concepts",
    "glcm_features",
    "ground_truth_agreement",
    "hematoxylin_od",
    "instance_agreement",
    "normalisation_effect",
    "nuclei_properties",
    "patch_concepts",
    "patch_dir_mpp",
    "read_concept_dataset",
    "read_concepts",
    "segment_nuclei",
    "tissue_mask",
]
