"""Slides to patches: opening slides with their resolution, tissue, tiles, manifests, annotations, patch datasets, stain normalisation and sample data (notebook 01).

Pipeline (each step usable on its own)::

    from mtlutils import data

    manifest = data.read_manifest("cohort/manifest.csv")         # validated table of slides
    index = data.tile_cohort(manifest, "runs/patches")          # one HDF5 per slide + index.csv
    patches = data.load_patches("runs/patches", split="train")  # images (N, H, W, 3) uint8 + meta

Modules: :mod:`~mtlutils.data.wsi` (opening slides, MPP), :mod:`~mtlutils.data.tissue`,
:mod:`~mtlutils.data.tiling` (one slide), :mod:`~mtlutils.data.manifest`, :mod:`~mtlutils.data.cohort`
(a cohort into a patch dataset), :mod:`~mtlutils.data.patches` (loading it), :mod:`~mtlutils.data.index`,
:mod:`~mtlutils.data.units`; and, imported on their own, ``annotations``, ``stain``, ``sample_data``.
"""

from mtlutils.data.camelyon import camelyon_manifest, write_camelyon_manifest
from mtlutils.data.cohort import tile_cohort, tile_overlay
from mtlutils.data.manifest import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    read_manifest,
    validate_manifest,
)
from mtlutils.data.patches import PatchSet, load_patches
from mtlutils.data.tiling import TilePlan, iter_tile_blocks, plan_tiles, tile_slide
from mtlutils.data.tissue import TissueMask, detect_tissue
from mtlutils.data.wsi import (
    MissingMPPError,
    NoTissueError,
    Slide,
    SlideError,
    SlideNotFoundError,
    mpp_from_properties,
    open_slide,
    pyramid_table,
)

__all__ = [
    "SlideError",
    "SlideNotFoundError",
    "MissingMPPError",
    "NoTissueError",
    "ManifestError",
    "Slide",
    "open_slide",
    "pyramid_table",
    "TissueMask",
    "detect_tissue",
    "tile_slide",
    "TilePlan",
    "plan_tiles",
    "iter_tile_blocks",
    "tile_overlay",
    "mpp_from_properties",
    "read_manifest",
    "validate_manifest",
    "tile_cohort",
    "PatchSet",
    "load_patches",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "camelyon_manifest",
    "write_camelyon_manifest",
]
