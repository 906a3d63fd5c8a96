"""Embedded synthetic multi-center H&E cohort whose hidden variables are all known.

Every lesson of the tutorial is *measured* on this cohort, so it is built to be honest: the tumour
signal is real but not trivial, the acquisition center is a planted confounder that a control cohort
(``confounder=False``) removes, and nothing here is tuned to make any learning method win.

Rendering (Beer–Lambert stain mixing)
    Per pixel, a hematoxylin concentration ``H`` and an eosin concentration ``E`` (optical density per
    unit stain vector, natural log) come from the tissue compartments below; the transmitted light is
    ``I_c = I0 · exp(-s · (H · h_c + E · e_c))`` for channel c, with the center's OD unit vectors
    ``h``, ``e`` (:attr:`CenterStyle.stain_od`), glass brightness ``I0`` and stain strength ``s``,
    followed by an optical blur (Gaussian, σ in µm) and sensor noise (near-Gaussian, σ in 0..255
    units). Each slide jitters its center's stain a little (vector directions by ~1.5°, strength by
    ±6 %), as the slides of one lab do. Colour deconvolution, Reinhard and Macenko therefore behave as
    on real slides.

Tissue (sizes in µm, whatever the ``mpp``)
    - white glass outside an irregular tissue outline covering ~30–70 % of a slide (patches from
      :func:`render_patch` are all tissue);
    - stroma: wavy collagen bundles and fibres (E ≈ 0.5–1.1, H 0.04) with white clefts; inside tumour
      regions a paler, flatter (desmoplastic) stroma that holds twice as many stromal nuclei;
    - normal glands, each an epithelial ring around a lumen with one basal row of columnar nuclei
      ~7.5 µm apart (long axis radial) and lilac cytoplasm (E 0.42, H 0.12): scattered ducts (outer
      radius 30–65 µm) and lobules (radius 80–160 µm) packed with small acini (radius 12–19 µm), so
      normal tissue has epithelium-dense areas too;
    - tumour regions (the annotated polygons): nests and sheets of tumour cells (cytoplasm E 0.30,
      H 0.20). Each region has a *grade* g ~ U(0, 1) that sets its architecture and nuclei:
      epithelial fraction 0.55 + 0.3 g, nest size 25 + 30 g µm, gland-like lumens only at low grade
      (up to ~15 % at g = 0).

Nuclei (ground truth: centroid, area, type, relative hematoxylin load ``intensity``)
    ===========  =============  ===========  ===============  ==================  ========================
    type         mean area µm²  area CV      axis ratio       intensity           density
    ===========  =============  ===========  ===============  ==================  ========================
    normal       34 + 16 a      0.15         1.2–1.7          0.95 + 0.1 a,       basal row, ~7.5 µm apart
                                                              sd 0.08
    stromal      30             0.20         2.5–4.0          1.05 ± 0.08         900 /mm² of stroma
                                                                                  (1800 in tumour stroma)
    lymphocyte   24             0.12         1.0–1.15         1.45 ± 0.08         see TME below
    tumour       42 + 60 g      0.18 + 0.25g 1.0–(1.3+0.5g)   1.05 + 0.4 g,       3800 + 1700 g /mm² of
                                                              sd 0.08 + 0.1 g     tumour epithelium
    ===========  =============  ===========  ===============  ==================  ========================

    a ~ U(0, 1) is the *activity* of a normal duct or lobule (resting to reactive epithelium). (An
    area of 24–110 µm² is a nucleus 5.5–12 µm across; ``intensity`` 1 is a hematoxylin
    concentration of 1.8.) Tumour nuclei also get coarser chromatin (texture 0.12 + 0.2 g), a darker
    rim (chromatin margination, 0.5 g), a nucleolus (0.5 g) and irregular outlines (0.04 + 0.12 g).
    A low-grade (g ≈ 0) tumour therefore overlaps normal epithelium in nuclear size, density and
    darkness; a high-grade one (g ≈ 1) does not. Per mm² of *tissue*, tumour regions hold ~1–1.6x
    as many nuclei as normal tissue (more at higher grade). ``area_um2`` is the area actually drawn.
    Measured on 224-px patches (0.5 µm/px) with :func:`mtlutils.concepts.patch_concepts`, the
    segmented mean nuclear area alone separates tumour from normal patches with AUC ≈ 0.90, nuclei
    count ≈ 0.8, all concepts together (logistic regression) ≈ 0.95: learnable, not trivial.

Slide-level variables
    - ``has_tumour``: exactly ⌊prevalence · n + ½⌋ of a center's n slides carry tumour (which ones: a
      seeded permutation shared by the confounded and the control cohort, so the tumour slides at a
      lower prevalence are a subset of those at a higher one). A tumour slide has 1–3 regions
      covering a fraction 0.10 + 0.5 · prevalence ± 0.08 of its tissue, so a center's prevalence sets
      both its slide-level and its patch-level tumour rate (the planted confounder).
    - ``biomarker``: binary, half of each center's slides positive (seeded permutation), independent
      of tumour and center.
    - ``tme_score`` = sigmoid(1.8 · (biomarker − 0.5) + N(0, 1)) in [0, 1]: positive slides score
      ~0.36 higher on average, but the distributions overlap (AUC of the TME score for the biomarker
      ≈ 0.90 in expectation). Lymphocytes are an inhomogeneous Poisson process of mean density
      150 + 2600 · tme per mm² of stroma (a quarter of that inside tumour epithelium), patchy
      (log-normal intensity, scale ~60 µm), with a hard core (none centred within 6 µm of another
      nucleus or 5 µm of another lymphocyte). The biomarker acts on the image *only* through them.

Centers
    Training centers A, B, C differ in stain (vectors, I0, strength, blur, noise) and in tumour
    prevalence (0.8 / 0.5 / 0.2 in LEGACY, 0.95 / 0.5 / 0.05 in HARD); external center D has a
    visibly different stain (bluer hematoxylin, orange eosin, greyer glass, stronger staining, more
    blur and noise) and prevalence 0.5.
    ``confounder=False`` (the control) gives every training center the training mean (0.5);
    everything else is identical for one seed. Tissue morphology never depends on the center.

Difficulty settings (:class:`~mtlutils.synthetic.settings.GeneratorSettings`, ``settings=`` of
:func:`generate_cohort`; hashed with ``FORMAT_VERSION`` into ``generator_hash``, recorded in
``cohort.json``). :data:`LEGACY` (the field defaults) gives the cohort described above; :data:`HARD`,
the frozen default (:data:`DEFAULT_SETTINGS`, its card in every band), adds overlapping morphology
(grades 0–0.8, reactive normal nuclei, shared cytoplasm, lobule-rich normal tissue), benign mimics
(lymphoid follicles, sinus histiocytes, crush streaks; nuclei typed ``germinal``, ``mantle``,
``histiocyte``, ``crushed``), coarse annotations (dilated, simplified
outlines; small foci left out; the exact regions in ``truth/{slide_id}.xml``, true patch labels from
:func:`patch_dir_true_labels`), scanner defocus and JPEG per center, and a stronger shortcut
(prevalences 0.95 / 0.5 / 0.05, center stain differences x2.1). :func:`cohort_card` measures the result;
:mod:`~mtlutils.synthetic.realism` compares tiles with real ones (OD histograms, texture, distances).

Coordinates: level-0 pixels, x to the right, y down, continuous, pixel (r, c) covering
[c, c+1) × [r, r+1) (as in :mod:`mtlutils.data.annotations`): a centroid at the centre of pixel (r, c)
is x = c + 0.5, y = r + 0.5 (add 0.5 to ``regionprops`` centroids before comparing).

Determinism: each slide draws from its own generators derived from (seed, center name, slide index),
one independent stream per part of the picture (layout, tumour, glands, each nucleus population,
texture, noise), so slides can be made in any order, in parallel or resumed, and a control slide
differs from its confounded twin only where its tumour differs.

Modules: :mod:`~mtlutils.synthetic.model` (nucleus parameters, densities, TME),
:mod:`~mtlutils.synthetic.centers` (stains), :mod:`~mtlutils.synthetic.fields` (random streams and
fields), :mod:`~mtlutils.synthetic.nuclei`, :mod:`~mtlutils.synthetic.tissue` (layout),
:mod:`~mtlutils.synthetic.render`, :mod:`~mtlutils.synthetic.slide` (one slide or patch),
:mod:`~mtlutils.synthetic.cohort` (plan and writer), :mod:`~mtlutils.synthetic.truth` (ground truth
of tiled patches), :mod:`~mtlutils.synthetic.settings` (difficulty options and their hash),
:mod:`~mtlutils.synthetic.mimics`, :mod:`~mtlutils.synthetic.annotate` (coarse annotations) and
:mod:`~mtlutils.synthetic.card` (the cohort card) and :mod:`~mtlutils.synthetic.realism`.
"""

from __future__ import annotations

from mtlutils.synthetic import realism
from mtlutils.synthetic.card import BANDS, card_table, cohort_card, format_card, plot_card
from mtlutils.synthetic.centers import CenterStyle, default_centers, get_center
from mtlutils.synthetic.cohort import (
    MANIFEST_COLUMNS,
    SPLIT_FRACTIONS,
    generate_cohort,
    plan_cohort,
)
from mtlutils.synthetic.fields import STREAMS
from mtlutils.synthetic.model import (
    NUCLEI_COLUMNS,
    NUCLEUS_PARAMS,
    NUCLEUS_TYPES,
    normal_nucleus_params,
    tme_from_biomarker,
    tumour_area_fraction,
    tumour_nucleus_params,
)
from mtlutils.synthetic.settings import (
    DEFAULT_SETTINGS,
    FORMAT_VERSION,
    HARD,
    LEGACY,
    GeneratorSettings,
    generator_hash,
)
from mtlutils.synthetic.slide import (
    MIN_PATCH_PX,
    MIN_SLIDE_PX,
    MPP_RANGE,
    SyntheticSlide,
    generate_slide,
    render_patch,
)
from mtlutils.synthetic.slide import (
    _slide_hidden as _slide_hidden,  # used by the tests
)
from mtlutils.synthetic.tissue import _region_map as _region_map  # used by the tests
from mtlutils.synthetic.tissue import _TumourRegion as _TumourRegion
from mtlutils.synthetic.truth import (
    GROUND_TRUTH_COLUMNS,
    MIMIC_TYPES,
    TRUE_LABEL_COLUMNS,
    nuclei_in_patch,
    patch_dir_ground_truth,
    patch_dir_true_labels,
    patch_dir_true_nuclei,
    patch_ground_truth,
    read_nuclei,
    true_regions,
)

__all__ = [
    "CenterStyle",
    "SyntheticSlide",
    "NUCLEUS_TYPES",
    "MANIFEST_COLUMNS",
    "NUCLEI_COLUMNS",
    "default_centers",
    "get_center",
    "normal_nucleus_params",
    "tumour_nucleus_params",
    "render_patch",
    "generate_slide",
    "plan_cohort",
    "generate_cohort",
    "GROUND_TRUTH_COLUMNS",
    "patch_ground_truth",
    "patch_dir_ground_truth",
    "read_nuclei",
    "nuclei_in_patch",
    "patch_dir_true_nuclei",
    "patch_dir_true_labels",
    "true_regions",
    "MIMIC_TYPES",
    "TRUE_LABEL_COLUMNS",
    "NUCLEUS_PARAMS",
    "tumour_area_fraction",
    "tme_from_biomarker",
    "MIN_SLIDE_PX",
    "MIN_PATCH_PX",
    "MPP_RANGE",
    "FORMAT_VERSION",
    "SPLIT_FRACTIONS",
    "STREAMS",
    "GeneratorSettings",
    "DEFAULT_SETTINGS",
    "LEGACY",
    "HARD",
    "generator_hash",
    "cohort_card",
    "format_card",
    "card_table",
    "plot_card",
    "realism",
    "BANDS",
]
