"""The synthetic multi-center H&E cohort: determinism, hidden variables, confounder, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtlutils import synthetic as syn
from mtlutils.data.annotations import rasterize_polygons, read_asap_xml

MM2_PER_PX = 0.25e-6  # at 0.5 µm/px


def _centers(confounder: bool = True) -> dict[str, syn.CenterStyle]:
    return {c.name: c for c in syn.default_centers(confounder)}


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("cohort")
    manifest = syn.generate_cohort(out, slides_per_center=1, size_px=512, seed=3, show_progress=False)
    return out, manifest


# ---- patches and slides ----------------------------------------------------------------------------


def test_render_patch_shape_and_ground_truth():
    rgb, nuclei = syn.render_patch("A", tumour=True, size_px=224, seed=1, grade=0.5)
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8
    assert list(nuclei.columns) == list(syn.NUCLEI_COLUMNS)
    assert set(nuclei["type"]) <= set(syn.NUCLEUS_TYPES) and (nuclei["type"] == "tumour").sum() > 10
    assert nuclei["x_px"].between(0, 224).all() and nuclei["y_px"].between(0, 224).all()
    # fully covered by tissue: no glass-white rows/columns
    assert (rgb.mean(axis=2) < 235).mean() > 0.8
    # nuclei are where the table says: the pixel under each tumour centroid is darker than the patch median
    grey = rgb.mean(axis=2)
    tum = nuclei[nuclei["type"] == "tumour"]
    under = grey[tum["y_px"].astype(int), tum["x_px"].astype(int)]
    assert np.median(under) < np.median(grey) - 40


@pytest.mark.parametrize("settings", [syn.LEGACY, syn.HARD], ids=["legacy", "hard"])
def test_looks_like_h_and_e(settings):
    """Pink (eosin) background, purple-blue nuclei: R > G in both, nuclei much darker and bluer.

    HARD pushes the centers' stains apart (``stain_gain``), which leaves center A's nuclei purple
    (blue about as strong as red) rather than blue: both above green."""
    rgb, nuclei = syn.render_patch("A", tumour=False, size_px=256, seed=4, settings=settings)
    px = rgb.reshape(-1, 3).astype(float)
    grey = px.mean(axis=1)
    stroma = px[grey > np.percentile(grey, 60)].mean(axis=0)
    dark = px[grey < np.percentile(grey, 3)].mean(axis=0)
    assert stroma[0] > stroma[1] + 25 and stroma[2] > stroma[1]  # pink: red and blue above green
    assert dark.mean() < 110 and dark[2] > dark[1] + 20  # nuclei: dark, blue well above green
    if settings == syn.LEGACY:
        assert dark[2] > dark[0]  # ... and above red: blue-purple


def test_patch_and_slide_are_deterministic_by_seed():
    a, ta = syn.render_patch("B", tumour=True, size_px=128, seed=7)
    b, tb = syn.render_patch("B", tumour=True, size_px=128, seed=7)
    c, _ = syn.render_patch("B", tumour=True, size_px=128, seed=8)
    assert np.array_equal(a, b) and ta.equals(tb)
    assert not np.array_equal(a, c)
    center = _centers()["C"]
    s1 = syn.generate_slide(2, center, True, 1, 0.4, 512, 0.5, seed=5)
    s2 = syn.generate_slide(2, center, True, 1, 0.4, 512, 0.5, seed=5)
    s3 = syn.generate_slide(2, center, True, 1, 0.4, 512, 0.5, seed=6)
    assert np.array_equal(s1.rgb, s2.rgb) and s1.nuclei.equals(s2.nuclei)
    assert all(np.array_equal(p, q) for p, q in zip(s1.polygons, s2.polygons, strict=True))
    assert not np.array_equal(s1.rgb, s3.rgb)
    assert s1.slide_id == "C-002" and s1.has_tumour and len(s1.polygons) == len(s1.grades) >= 1


def test_control_twin_of_a_tumour_free_slide_is_identical():
    """The confounder changes prevalence only: a slide without tumour in both cohorts is the same picture."""
    conf, ctrl = _centers(True)["A"], _centers(False)["A"]
    assert conf.tumour_prevalence != ctrl.tumour_prevalence
    s1 = syn.generate_slide(4, conf, False, 0, 0.3, 512, 0.5, seed=0)
    s2 = syn.generate_slide(4, ctrl, False, 0, 0.3, 512, 0.5, seed=0)
    assert np.array_equal(s1.rgb, s2.rgb)


def test_tumour_polygons_cover_planned_area_and_match_the_annotation_rasteriser():
    slide = syn.generate_slide(0, _centers()["A"], True, 1, 0.5, 1024, 0.5, seed=2)
    shape = slide.rgb.shape[:2]
    mine = syn._region_map([syn._TumourRegion(p, 0.5) for p in slide.polygons], shape) > 0
    theirs = rasterize_polygons(slide.polygons, shape)
    assert (mine != theirs).mean() < 1e-4
    # A's tumour slides: 0.10 + 0.5 * 0.8 = 0.5 of the tissue ± 0.08 jitter, ± overlap and clipping
    assert 0.25 < slide.tumour_fraction < 0.7
    tumour = slide.nuclei[slide.nuclei["type"] == "tumour"]
    inside = theirs[tumour["y_px"].astype(int), tumour["x_px"].astype(int)]
    assert inside.all()


# ---- hidden variables ------------------------------------------------------------------------------


def test_tumour_nuclei_larger_denser_darker_than_normal_on_average():
    """The nuclei table of the module docstring (LEGACY: no reactive normal nuclei; HARD changes it)."""
    size = 384
    legacy = syn.LEGACY
    area_mm2 = size * size * MM2_PER_PX
    normal_area, normal_count, tumour_area, tumour_count, tumour_int = [], [], [], [], []
    for seed in range(4):
        _, n = syn.render_patch("A", tumour=False, size_px=size, seed=seed, settings=legacy)
        normal_area += list(n.loc[n["type"] == "normal", "area_um2"])
        normal_count.append(len(n) / area_mm2)
        for grade in (0.0, 0.5, 1.0):
            _, t = syn.render_patch("A", tumour=True, size_px=size, seed=seed, grade=grade, settings=legacy)
            tumour_area += list(t.loc[t["type"] == "tumour", "area_um2"])
            tumour_int += list(t.loc[t["type"] == "tumour", "intensity"])
            tumour_count.append(len(t) / area_mm2)
    assert np.mean(normal_area) == pytest.approx(42, rel=0.15)  # normal epithelium 34–50 µm²
    assert np.mean(tumour_area) == pytest.approx(72, rel=0.15)  # 42 + 60 * mean grade 0.5
    assert np.mean(tumour_count) > 1.5 * np.mean(normal_count)
    assert np.mean(tumour_int) > 1.15


def test_low_grade_tumour_overlaps_normal_epithelium():
    _, t0 = syn.render_patch("A", tumour=True, size_px=384, seed=1, grade=0.0)
    _, t1 = syn.render_patch("A", tumour=True, size_px=384, seed=1, grade=1.0)
    _, n = syn.render_patch("A", tumour=False, size_px=384, seed=1)
    low = t0.loc[t0["type"] == "tumour", "area_um2"]
    high = t1.loc[t1["type"] == "tumour", "area_um2"]
    normal = n.loc[n["type"] == "normal", "area_um2"]
    assert low.mean() < 1.3 * normal.mean()  # low grade: barely larger
    assert (low < normal.quantile(0.9)).mean() > 0.4  # ... and many low-grade nuclei look normal-sized
    assert high.mean() > 2.2 * normal.mean() and high.std() > 2.5 * low.std()  # high grade: big, pleomorphic
    assert len(t1) > 1.5 * len(t0)


def test_lymphocytes_follow_the_tme_score():
    counts = {}
    for tme in (0.05, 0.95):
        counts[tme] = sum(
            (syn.render_patch("B", size_px=256, seed=s, tme_score=tme)[1]["type"] == "lymphocyte").sum()
            for s in range(4)
        )
    assert counts[0.95] > 4 * counts[0.05] > 0


def test_biomarker_raises_tme_but_distributions_overlap():
    plan = syn.plan_cohort(slides_per_center=150, seed=0)
    pos = plan.loc[plan["biomarker"] == 1, "tme_score"].to_numpy()
    neg = plan.loc[plan["biomarker"] == 0, "tme_score"].to_numpy()
    assert plan["tme_score"].between(0, 1).all()
    assert abs(len(pos) - len(neg)) <= 4  # half of each center positive
    assert pos.mean() - neg.mean() == pytest.approx(0.36, abs=0.06)
    auc = (pos[:, None] > neg[None, :]).mean()
    assert 0.84 < auc < 0.95  # associated (≈ 0.90 expected), but not separable
    assert pos.min() < np.median(neg) and neg.max() > np.median(pos)


@pytest.mark.parametrize("settings", [syn.LEGACY, syn.HARD], ids=["legacy", "hard"])
def test_confounded_prevalence_differs_and_control_is_equal(settings):
    n = 20
    conf = syn.plan_cohort(slides_per_center=n, seed=1, confounder=True, settings=settings)
    ctrl = syn.plan_cohort(slides_per_center=n, seed=1, confounder=False, settings=settings)
    rate_conf = conf.groupby("center")["has_tumour"].mean()
    rate_ctrl = ctrl.groupby("center")["has_tumour"].mean()
    expected = {c: np.floor(p * n + 0.5) / n for c, p in zip("ABCD", settings.prevalence, strict=True)}
    assert rate_conf.to_dict() == pytest.approx(expected)
    assert rate_conf["A"] > rate_conf["B"] > rate_conf["C"]
    mean = np.floor(np.mean(settings.prevalence[:3]) * n + 0.5) / n
    assert rate_ctrl.to_dict() == pytest.approx({"A": mean, "B": mean, "C": mean, "D": expected["D"]})
    # identical apart from has_tumour (and the splits stratified by it); tumour slides are nested
    same = ["slide_id", "patient_id", "center", "biomarker", "tme_score"]
    assert conf[same].equals(ctrl[same])
    a_conf = set(conf.loc[(conf["center"] == "A") & (conf["has_tumour"] == 1), "slide_id"])
    a_ctrl = set(ctrl.loc[(ctrl["center"] == "A") & (ctrl["has_tumour"] == 1), "slide_id"])
    assert a_ctrl < a_conf
    # patch-level confounder: tumour area per tumour slide also follows prevalence
    fractions = [
        syn._slide_hidden(c, 0, 0, settings)[1]["target_tumour_fraction"]
        for c in syn.default_centers(True, settings)[:3]
    ]
    assert fractions[0] > fractions[1] > fractions[2]


def test_splits_are_stratified_per_center():
    plan = syn.plan_cohort(slides_per_center=8, seed=0)
    train = plan[plan["center"] != "D"]
    for _, group in train.groupby("center"):
        counts = group["split"].value_counts().to_dict()
        assert counts == {"train": 4, "val": 2, "test": 2}
        if group["has_tumour"].nunique() == 2:
            assert group.loc[group["split"] == "train", "has_tumour"].nunique() == 2
    assert (plan.loc[plan["center"] == "D", "split"] == "external").all()
    tiny = syn.plan_cohort(slides_per_center=3, seed=0)
    for _, group in tiny[tiny["center"] != "D"].groupby("center"):
        assert sorted(group["split"]) == ["test", "train", "val"]


@pytest.mark.parametrize(
    "settings, ratio, angle_ratio", [(syn.LEGACY, 1.8, 2.0), (syn.HARD, 1.0, 1.0)], ids=["legacy", "hard"]
)
def test_external_center_stain_differs_most(settings, ratio, angle_ratio):
    """Mean colour (CIELAB a*, b*: hue and saturation) of the same tissue under each center's stain.

    HARD amplifies the training centers' differences (``stain_gain``: a more telling center stain),
    so D stays the farthest but by a smaller margin."""
    from skimage.color import rgb2lab

    def mean_ab(center: str) -> np.ndarray:
        patches = [
            syn.render_patch(center, tumour=t, size_px=160, seed=s, grade=0.5, settings=settings)[0]
            for s in (0, 1)
            for t in (0, 1)
        ]
        return np.mean([rgb2lab(p).reshape(-1, 3).mean(axis=0)[1:] for p in patches], axis=0)

    ab = {c: mean_ab(c) for c in "ABCD"}
    pairs = [("A", "B"), ("A", "C"), ("B", "C")]
    between_train = max(np.linalg.norm(ab[a] - ab[b]) for a, b in pairs)
    to_external = min(np.linalg.norm(ab["D"] - ab[c]) for c in "ABC")
    assert to_external > ratio * between_train
    vectors = {c.name: c for c in syn.default_centers(True, settings)}

    def h_angle(a: str, b: str) -> float:
        return float(np.degrees(np.arccos(vectors[a].stain_od[0] @ vectors[b].stain_od[0])))

    assert min(h_angle("D", c) for c in "ABC") > angle_ratio * max(h_angle(a, b) for a, b in pairs)


def _macenko(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Macenko et al. 2009 stain-vector estimate (H, E unit OD vectors), written out for the test."""
    od = -np.log((rgb.reshape(-1, 3).astype(float) + 1) / 255)
    od = od[(od > beta).all(axis=1)]
    _, vecs = np.linalg.eigh(np.cov(od.T))
    plane = vecs[:, [1, 2]]
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    a, b = plane @ [np.cos(lo), np.sin(lo)], plane @ [np.cos(hi), np.sin(hi)]
    a, b = a * np.sign(a.sum()), b * np.sign(b.sum())
    h, e = (a, b) if a[0] > b[0] else (b, a)  # hematoxylin absorbs more red
    return h / np.linalg.norm(h), e / np.linalg.norm(e)


def test_macenko_recovers_each_centers_stain_vectors():
    """The physics is Beer–Lambert, so standard stain estimation finds the stains that were mixed."""
    for style in syn.default_centers():
        rgb, _ = syn.render_patch(style, tumour=True, size_px=384, seed=3, grade=0.5)
        h, e = _macenko(rgb)
        h_err = np.degrees(np.arccos(np.clip(h @ style.stain_od[0], -1, 1)))
        e_err = np.degrees(np.arccos(np.clip(e @ style.stain_od[1], -1, 1)))
        assert h_err < 6 and e_err < 16, (style.name, h_err, e_err)


# ---- cohort files ----------------------------------------------------------------------------------


def test_manifest_and_files(tiny_cohort):
    out, manifest = tiny_cohort
    assert list(manifest.columns) == list(syn.MANIFEST_COLUMNS)
    assert list(manifest["slide_id"]) == ["A-000", "B-000", "C-000", "D-000"]
    assert list(manifest["patient_id"]) == ["P-A-000", "P-B-000", "P-C-000", "P-D-000"]
    assert list(manifest["split"]) == ["train", "train", "train", "external"]
    assert list(manifest["has_tumour"]) == [1, 1, 0, 1]  # round(0.8), round(0.5), round(0.2), round(0.5)
    on_disk = pd.read_csv(out / "manifest.csv")
    pd.testing.assert_frame_equal(on_disk, manifest, check_dtype=False)
    for row in manifest.itertuples():
        for rel in (row.path, row.annotation, row.nuclei):
            assert (out / rel).is_file(), rel
        nuclei = pd.read_csv(out / row.nuclei)
        assert list(nuclei.columns) == list(syn.NUCLEI_COLUMNS) and len(nuclei) > 50
        polygons = read_asap_xml(out / row.annotation)
        assert (len(polygons) > 0) == bool(row.has_tumour)
        assert "stromal" in set(nuclei["type"]) and ("tumour" in set(nuclei["type"])) == bool(row.has_tumour)
    cohort = json.loads((out / "cohort.json").read_text())
    assert cohort["parameters"]["seed"] == 3 and cohort["parameters"]["confounder"] is True
    assert [c["name"] for c in cohort["centers"]] == ["A", "B", "C", "D"]
    assert [s["slide_id"] for s in cohort["slides"]] == list(manifest["slide_id"])
    assert not list(out.rglob(".*tmp*")) and not (out / ".cohort-in-progress.json").exists()


def test_tiff_opens_with_openslide(tiny_cohort):
    openslide = pytest.importorskip("openslide")
    out, manifest = tiny_cohort
    with openslide.OpenSlide(str(out / manifest.loc[0, "path"])) as slide:
        assert slide.dimensions == (512, 512)
        assert slide.level_count >= 2
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
        region = np.asarray(slide.read_region((0, 0), 0, (512, 512)).convert("RGB"))
    again = syn.generate_slide(
        0,
        _centers()["A"],
        True,
        int(manifest.loc[0, "biomarker"]),
        float(manifest.loc[0, "tme_score"]),
        512,
        0.5,
        seed=3,
    )
    assert np.array_equal(region, again.rgb)  # lossless, and the manifest's TME score is the rendered one


def test_resume_skips_complete_slides_and_redoes_incomplete_ones(tmp_path):
    kwargs = dict(slides_per_center=1, size_px=512, seed=0, show_progress=False)
    first = syn.generate_cohort(tmp_path, **kwargs)
    tiff = tmp_path / "slides" / "B-000.tiff"
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "slides").iterdir()}
    (tmp_path / "nuclei" / "B-000.csv").unlink()  # a crash after the TIFF: incomplete
    second = syn.generate_cohort(tmp_path, **kwargs)
    pd.testing.assert_frame_equal(first, second)
    changed = {p.name for p, t in stamps.items() if p.stat().st_mtime_ns != t}
    assert changed == {tiff.name}
    assert (tmp_path / "nuclei" / "B-000.csv").is_file()
    # other parameters: the cached slides are stale, so the cohort is regenerated (not mixed)
    third = syn.generate_cohort(tmp_path, slides_per_center=1, size_px=512, seed=1, show_progress=False)
    assert json.loads((tmp_path / "cohort.json").read_text())["parameters"]["seed"] == 1
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items() if p.exists())
    assert not third["tme_score"].equals(first["tme_score"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slides_per_center": 0}, "slides_per_center=0"),
        ({"size_px": 100}, "size_px=100"),
        ({"mpp": 5.0}, "mpp=5.0"),
        ({"workers": 0}, "workers=0"),
    ],
)
def test_bad_cohort_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        syn.generate_cohort(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_bad_inputs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="a-file"):
        syn.generate_cohort(blocker / "cohort", slides_per_center=1, size_px=512)
    with pytest.raises(ValueError, match="unknown center 'Z'.*'A'"):
        syn.render_patch("Z")
    with pytest.raises(ValueError, match="tme_score=1.5"):
        syn.render_patch("A", tme_score=1.5)
    with pytest.raises(ValueError, match="grade=-0.1"):
        syn.render_patch("A", tumour=True, grade=-0.1)
    with pytest.raises(ValueError, match="size_px=8"):
        syn.render_patch("A", size_px=8)
    with pytest.raises(ValueError, match="size_px=256"):
        syn.generate_slide(0, _centers()["A"], False, 0, 0.3, 256, 0.5, 0)
    with pytest.raises(ValueError, match="stain_od"):
        syn.CenterStyle("X", "train", np.ones((3, 3)), 240.0, 1.0, 0.5, 2.0, 0.5)


def test_parallel_workers_give_identical_slides(tmp_path):
    """workers=2 (spawned processes, ~3 s to start) writes the same cohort as workers=1."""
    serial = syn.generate_cohort(
        tmp_path / "serial", slides_per_center=1, size_px=512, seed=0, show_progress=False
    )
    parallel = syn.generate_cohort(
        tmp_path / "parallel", slides_per_center=1, size_px=512, seed=0, workers=2, show_progress=False
    )
    pd.testing.assert_frame_equal(serial, parallel)
    for rel in serial["nuclei"]:
        assert (tmp_path / "serial" / rel).read_bytes() == (tmp_path / "parallel" / rel).read_bytes()


# ---- ground-truth concepts per patch -----------------------------------------------------------------


def _toy_nuclei() -> pd.DataFrame:
    """Five nuclei: three in the patch [0, 100)², one on its right edge (x = 100: outside), one far away."""
    return pd.DataFrame(
        {
            "x_px": [10.5, 50.0, 99.9, 100.0, 400.0],
            "y_px": [10.5, 60.0, 0.0, 50.0, 400.0],
            "area_um2": [20.0, 40.0, 60.0, 1000.0, 1000.0],
            "type": ["tumour", "tumour", "lymphocyte", "normal", "stromal"],
            "intensity": [1.0, 1.2, 1.4, 9.0, 9.0],
        }
    )


def test_patch_ground_truth_counts_areas_and_types():
    coords = pd.DataFrame({"x_px": [0, 100, 1000], "y_px": [0, 0, 1000]}, index=[7, 8, 9])
    truth = syn.patch_ground_truth(_toy_nuclei(), coords, tile_size_px=100, mpp=0.5)
    assert list(truth.columns) == list(syn.GROUND_TRUTH_COLUMNS) and list(truth.index) == [7, 8, 9]
    first = truth.loc[7]
    assert first["n_nuclei"] == 3 and first["n_tumour"] == 2 and first["n_lymphocyte"] == 1
    assert first["area"] == pytest.approx(40.0)
    assert first["area_cv"] == pytest.approx(20.0 / 40.0)  # SD (ddof 1) of 20, 40, 60 is 20
    assert first["intensity"] == pytest.approx(1.2)
    # 3 nuclei in a 50 µm x 50 µm patch = 0.0025 mm²
    assert first["count"] == pytest.approx(3 / 0.0025)
    second = truth.loc[8]  # the nucleus at x = 100 belongs to the patch starting there
    assert second["n_nuclei"] == 1 and second["n_normal"] == 1 and np.isnan(second["area_cv"])
    empty = truth.loc[9]
    assert empty["n_nuclei"] == 0 and empty["count"] == 0 and np.isnan(empty["area"])


def test_patch_ground_truth_uses_the_given_tissue_fraction():
    nuclei = _toy_nuclei()
    corners = np.array([[0, 0], [0, 0], [0, 0]])
    truth = syn.patch_ground_truth(nuclei, corners, 100, 0.5, tissue_fraction=[1.0, 0.5, 0.0])
    assert truth["count"].iloc[1] == pytest.approx(2 * truth["count"].iloc[0])
    assert np.isnan(truth["count"].iloc[2])  # no tissue: density undefined, never infinite
    assert (truth["n_nuclei"] == 3).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(coords=np.zeros((2, 3))), "shape"),
        (dict(coords=pd.DataFrame({"x": [0]})), "x_px, y_px"),
        (dict(tile_size_px=0), "tile_size_px"),
        (dict(mpp=-1), "mpp"),
        (dict(tissue_fraction=[50.0]), "percent"),
    ],
)
def test_patch_ground_truth_bad_inputs(kwargs, message):
    args = dict(nuclei=_toy_nuclei(), coords=np.zeros((1, 2)), tile_size_px=100, mpp=0.5) | kwargs
    with pytest.raises(ValueError, match=message):
        syn.patch_ground_truth(**args)
    with pytest.raises(ValueError, match="lacks column"):
        syn.patch_ground_truth(_toy_nuclei().drop(columns="area_um2"), np.zeros((1, 2)), 100, 0.5)


def test_nuclei_in_patch_gives_patch_pixel_coordinates():
    inside = syn.nuclei_in_patch(_toy_nuclei(), 0, 0, tile_size_px=200, tile_px=100)
    assert len(inside) == 4  # x = 100 is inside a 200-px patch
    assert inside["patch_x"].tolist() == pytest.approx([5.25, 25.0, 49.95, 50.0])
    native = syn.nuclei_in_patch(_toy_nuclei(), 40, 50, tile_size_px=100)
    assert native["type"].tolist() == [
        "tumour",
        "normal",
    ]  # (50, 60) and (100, 50) lie in [40, 140) x [50, 150)
    assert native["patch_x"].tolist() == pytest.approx([10.0, 60.0])
    assert native["patch_y"].tolist() == pytest.approx([10.0, 0.0])


def test_ground_truth_of_a_tiled_cohort(tiny_cohort, tmp_path):
    from mtlutils.data import tile_cohort

    out, manifest = tiny_cohort
    index = tile_cohort(
        out / "manifest.csv", tmp_path / "patches", max_tiles_per_slide=5, show_progress=False
    )
    truth = syn.patch_dir_ground_truth(tmp_path / "patches", out)
    assert len(truth) == len(index) and (truth["slide_id"].to_numpy() == index["slide_id"].to_numpy()).all()
    assert (truth["n_nuclei"] > 0).all() and truth["area"].between(15, 150).all()
    # the same numbers by hand for one patch (level-0 tiles of 224 px: tile_mpp equals the slide mpp)
    row = index.iloc[0]
    nuclei = syn.read_nuclei(out, row["slide_id"])
    by_hand = nuclei[
        nuclei["x_px"].between(row["x_px"], row["x_px"] + 224, inclusive="left")
        & nuclei["y_px"].between(row["y_px"], row["y_px"] + 224, inclusive="left")
    ]
    assert truth["n_nuclei"].iloc[0] == len(by_hand)
    assert truth["area"].iloc[0] == pytest.approx(by_hand["area_um2"].mean())
    assert truth["count"].iloc[0] == pytest.approx(len(by_hand) / (112 * 112 * 1e-6))
    # a selection, with one tissue fraction per index row
    keep = (index["split"] != "train").to_numpy()
    half = syn.patch_dir_ground_truth(
        tmp_path / "patches", out, tissue_fraction=np.full(len(index), 0.5), rows=keep
    )
    assert list(half.index) == list(np.flatnonzero(keep))
    assert half["count"].to_numpy() == pytest.approx(2 * truth.loc[keep, "count"].to_numpy())
    # the true nuclei of chosen patches, in patch pixels
    points = syn.patch_dir_true_nuclei(tmp_path / "patches", out, [0, 1])
    assert len(points) == 2 and len(points[0]) == len(by_hand)
    assert points[0]["patch_x"].between(0, 224).all() and points[0]["patch_y"].between(0, 224).all()


def test_ground_truth_folder_errors(tiny_cohort, tmp_path):
    out, _ = tiny_cohort
    with pytest.raises(FileNotFoundError, match="index.csv"):
        syn.patch_dir_ground_truth(tmp_path / "none", out)
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        syn.read_nuclei(tmp_path, "A-000")
    from mtlutils.data import tile_cohort

    tile_cohort(out / "manifest.csv", tmp_path / "patches", max_tiles_per_slide=2, show_progress=False)
    with pytest.raises(ValueError, match="tissue_fraction has 3 values"):
        syn.patch_dir_ground_truth(tmp_path / "patches", out, tissue_fraction=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="boolean mask"):
        syn.patch_dir_ground_truth(tmp_path / "patches", out, rows=[True])
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        syn.patch_dir_ground_truth(tmp_path / "patches", tmp_path)
    with pytest.raises(ValueError, match="outside"):
        syn.patch_dir_true_nuclei(tmp_path / "patches", out, [10_000])


# ---- difficulty settings ---------------------------------------------------------------------------


def test_generator_hash_names_the_settings():
    assert syn.DEFAULT_SETTINGS == syn.HARD  # the calibrated cohort (issue 8) is the default
    assert syn.generator_hash() == syn.generator_hash(syn.HARD) and len(syn.generator_hash()) == 12
    assert syn.generator_hash(syn.HARD) != syn.generator_hash(syn.LEGACY)
    assert syn.GeneratorSettings.from_dict(syn.HARD.to_dict()) == syn.HARD
    with pytest.raises(ValueError, match="grade_range"):
        syn.GeneratorSettings(grade_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="unknown generator setting"):
        syn.GeneratorSettings.from_dict({"grade": 1})


def test_hard_settings_add_mimics_coarse_annotations_and_stay_deterministic():
    hard = syn.GeneratorSettings(
        mimics_per_mm2=40.0,
        annotation_dilate_um=20.0,
        annotation_vertices=10,
        unannotated_foci=2.0,
        focus_blur_um=0.5,
        jpeg_quality=(80, 80, 80, 80),
    )
    centers = {c.name: c for c in syn.default_centers(True, hard)}
    args = (1, centers["A"], True, 1, 0.4, 768, 0.5, 0, hard)
    s1, s2 = syn.generate_slide(*args), syn.generate_slide(*args)
    assert np.array_equal(s1.rgb, s2.rgb) and s1.nuclei.equals(s2.nuclei)
    assert set(s1.nuclei["type"]) & set(syn.MIMIC_TYPES)  # mimic nuclei are typed in the truth
    assert s1.annotation_polygons is not None and len(s1.annotation_polygons[0]) == 10
    assert len(s1.polygons) >= len(s1.annotation_polygons)  # unannotated foci are in the truth only
    exact = rasterize_polygons(s1.polygons[:1], (768, 768))
    loose = rasterize_polygons(s1.annotation_polygons[:1], (768, 768))
    assert loose.sum() > exact.sum()  # the annotator's outline is drawn loosely


def test_hard_cohort_records_its_hash_and_exact_regions(tmp_path):
    syn.generate_cohort(
        tmp_path, slides_per_center=1, size_px=512, seed=2, show_progress=False, settings=syn.HARD
    )
    cohort = json.loads((tmp_path / "cohort.json").read_text())
    assert cohort["generator_hash"] == syn.generator_hash(syn.HARD) == cohort["parameters"]["generator_hash"]
    assert syn.GeneratorSettings.from_dict(cohort["generator_settings"]) == syn.HARD
    assert (tmp_path / "truth" / "A-000.xml").is_file()
    syn.generate_cohort(
        tmp_path, slides_per_center=1, size_px=512, seed=2, show_progress=False, settings=syn.LEGACY
    )  # other settings: regenerated, and the record says so
    cohort = json.loads((tmp_path / "cohort.json").read_text())
    assert cohort["generator_hash"] == syn.generator_hash(syn.LEGACY) != syn.generator_hash(syn.HARD)
