"""Per-notebook sizes by mode (quick / default / full): the one table every notebook's parameters follow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtlutils.core.layout import check_mode

#: notebook number -> mode -> sizes. Units: slides per center, slide side and CNN input in px, epochs,
#: seeds and bootstrap resamples as counts.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "01": {  # slides per center, slide side (level-0 px), tiles kept per slide, tiles per realism set
        "quick": {"slides": 3, "slide_px": 1024, "max_tiles": 24, "real": 8},
        "default": {"slides": 36, "slide_px": 1024, "max_tiles": 64, "real": 32},
        "full": {"slides": 72, "slide_px": 2048, "max_tiles": None, "real": 96},
    },
    "02": {  # overlay examples per center and class, stain-check patches per center
        "quick": {"examples": 1, "stain": 12},
        "default": {"examples": 2, "stain": 40},
        "full": {"examples": 3, "stain": 100},
    },
    "03": {  # CNN input px, maximum epochs, seeds per configuration, bootstrap resamples
        "quick": {"px": 48, "epochs": 2, "seeds": 1, "boot": 200},
        "default": {"px": 64, "epochs": 15, "seeds": 3, "boot": 1000},
        "full": {"px": 96, "epochs": 40, "seeds": 5, "boot": 2000},
    },
    "04": {  # internal / external patients, tiles per slide (min, max), tile px (at 1.14 µm/px), CV folds,
        # maximum epochs, seeds, bootstrap resamples, slides rendered for the encoder probe, balancers
        # (None: paper B's 16 = weighting x gradient; quick runs a subset), torchjd aggregators beside them
        "quick": {
            "patients": 40,
            "external": 24,
            "tiles": (4, 8),
            "tile_px": 96,
            "folds": 3,
            "epochs": 6,
            "seeds": 1,
            "boot": 200,
            "probe_slides": 8,
            "methods": ["naive/none", "uncert/pcgrad", "dwa/cagrad", "autol/graddrop"],
            "extra_methods": ["naive/upgrad"],
        },
        "default": {
            "patients": 200,
            "external": 80,
            "tiles": (8, 16),
            "tile_px": 96,
            "folds": 5,
            "epochs": 24,
            "seeds": 1,
            "boot": 1000,
            "probe_slides": 32,
            "methods": None,
            "extra_methods": ["naive/upgrad"],
        },
        "full": {
            "patients": 400,
            "external": 120,
            "tiles": (16, 48),
            "tile_px": 224,
            "folds": 5,
            "epochs": 32,
            "seeds": 3,
            "boot": 2000,
            "probe_slides": 40,
            "methods": None,
            "extra_methods": ["naive/upgrad", "naive/mgda", "naive/nash_mtl"],
        },
    },
    "05": {  # CNN input px, maximum epochs, bootstrap resamples, Grad-CAM patches, t-SNE beside UMAP,
        # maximum epochs of the MIL model, patient folds of the bag cohort (fold 0 holds out its test part)
        "quick": {
            "px": 48,
            "epochs": 2,
            "boot": 100,
            "cam": 3,
            "tsne": False,
            "mil_epochs": 8,
            "mil_folds": 3,
        },
        "default": {
            "px": 64,
            "epochs": 15,
            "boot": 500,
            "cam": 4,
            "tsne": True,
            "mil_epochs": 24,
            "mil_folds": 5,
        },
        "full": {
            "px": 96,
            "epochs": 40,
            "boot": 1000,
            "cam": 6,
            "tsne": True,
            "mil_epochs": 32,
            "mil_folds": 5,
        },
    },
}


def preset(notebook: str, mode: str, **overrides: Any) -> dict[str, Any]:
    """The sizes of ``notebook`` ("01", "02", …) in ``mode``, with every non-None override applied.

    ``preset("01", MODE, slides=SLIDES_PER_CENTER)`` keeps the mode's value when the notebook's
    parameter is None, and refuses a name the table does not have (a typo would be silently ignored).
    """
    if notebook not in PRESETS:
        raise ValueError(f"no presets for notebook {notebook!r}; known: {sorted(PRESETS)}")
    sizes = dict(PRESETS[notebook][check_mode(mode)])
    unknown = sorted(set(overrides) - set(sizes))
    if unknown:
        raise ValueError(f"notebook {notebook} has no preset named {unknown}; known: {sorted(sizes)}")
    sizes.update({k: v for k, v in overrides.items() if v is not None})
    return sizes


def table(notebook: str) -> Mapping[str, Mapping[str, Any]]:
    """The notebook's presets as {mode: sizes}, to print beside the parameters cell."""
    return PRESETS[notebook]
