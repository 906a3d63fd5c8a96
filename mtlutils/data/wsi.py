"""Opening a whole-slide image with a known resolution: :class:`Slide`, :func:`open_slide`, slide errors.

* Coordinates are level-0 pixels (``x_px``, ``y_px``: top-left corner) and micrometres
  (``x_um = x_px · mpp``). ``mpp`` is µm per level-0 pixel.
* MPP comes from the slide's metadata (``openslide.mpp-x``, then ``aperio.MPP``, then the TIFF
  resolution with its unit). ``open_slide(path, mpp_override=...)`` and the manifest's per-slide
  ``mpp`` column *override* the metadata (a warning is issued when they disagree by more than 10 %);
  ``default_mpp`` — the cohort-wide ``mpp_override`` of ``tile_cohort`` and ``--mpp-override`` on
  the command line — is used only for slides *lacking* MPP metadata. Without any of them, opening
  fails with a message naming the file and these options. The MPP is never guessed.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtlutils.data.units import check_mpp, is_plausible_mpp

__all__ = [
    "SlideError",
    "SlideNotFoundError",
    "MissingMPPError",
    "NoTissueError",
    "Slide",
    "open_slide",
    "mpp_from_properties",
]

MPP_FIX = "pass mpp_override=<µm per pixel> in Python, --mpp-override on the command line, or fill the manifest's mpp column"


class SlideError(ValueError):
    """A slide cannot be opened, has no usable MPP, or cannot be tiled."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide path does not exist."""


class MissingMPPError(SlideError):
    """The slide carries no microns-per-pixel metadata and no override was given."""


class NoTissueError(SlideError):
    """Tissue detection found no tile with enough tissue."""


def _float_or_none(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def mpp_from_properties(props: dict[str, str]) -> tuple[float | None, str]:
    """MPP (µm per level-0 px) and its source from OpenSlide properties; ``(None, "")`` when absent.

    Order: ``openslide.mpp-x``, ``aperio.MPP``, ``tiff.XResolution`` with ``tiff.ResolutionUnit``
    (centimeter or inch). Values outside :data:`mtlutils.data.units.PLAUSIBLE_MPP` are ignored.
    """
    for key in ("openslide.mpp-x", "aperio.MPP"):
        value = _float_or_none(props.get(key))
        if is_plausible_mpp(value):
            return value, key
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    xres = _float_or_none(props.get("tiff.XResolution"))
    if xres and xres > 0 and unit in {"centimeter", "inch"}:
        value = (1e4 if unit == "centimeter" else 25400.0) / xres
        if is_plausible_mpp(value):
            return value, "tiff.XResolution"
    return None, ""


def _looks_like_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head in {b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"}


class Slide:
    """An open whole-slide image with a known MPP (a thin wrapper around ``openslide.OpenSlide``).

    Attributes: ``path``, ``mpp`` (µm per level-0 px), ``mpp_source`` (property name or
    ``"override"``), ``dimensions`` (level-0 width, height), ``level_count``, ``level_dimensions``,
    ``level_downsamples``, ``properties``. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: Path, handle: Any, mpp: float, mpp_source: str):
        self.path = path
        self._handle = handle
        self.mpp = float(mpp)
        self.mpp_source = mpp_source
        self.dimensions: tuple[int, int] = tuple(handle.dimensions)
        self.level_count: int = int(handle.level_count)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(tuple(d) for d in handle.level_dimensions)
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in handle.level_downsamples)
        self.properties: dict[str, str] = dict(handle.properties)

    def __repr__(self) -> str:
        return (
            f"Slide({self.path.name!r}, {self.dimensions[0]}x{self.dimensions[1]} px, mpp={self.mpp:.4g} "
            f"({self.mpp_source}), levels={self.level_count})"
        )

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the OpenSlide handle (idempotent)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample is ≤ ``downsample`` (0.1 % tolerance for rounding)."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001:
                best = level
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array (h, w, 3) of ``size`` = (w, h) pixels at ``level``, top-left ``location`` in
        level-0 px. Transparent pixels (outside the scanned area) are composited onto white.
        """
        return np.ascontiguousarray(self._read_rgb_view(location, level, size))

    def _read_rgb_view(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """As :meth:`read_region`, but possibly a strided view of an RGBA buffer (one copy fewer)."""
        if self._handle is None:
            raise SlideError(f"slide {self.path} is closed; open it again with open_slide()")
        import openslide

        try:
            image = self._handle.read_region(
                (int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1]))
            )
        except openslide.OpenSlideError as exc:
            raise SlideError(
                f"cannot read slide {self.path} at {location}, level {level} ({exc}); the file may be truncated or corrupt: copy it again"
            ) from None
        return _rgba_to_rgb(np.asarray(image))

    def read_scaled(self, downsample: float, max_band_px: int = 16_000_000) -> np.ndarray:
        """The whole slide as RGB at ≈ ``downsample`` level-0 px per output px (exact size
        round(W / downsample) x round(H / downsample)), built band by band from the best level with
        area (box) averaging, so no level is ever read whole into memory.
        """
        from PIL import Image

        width0, height0 = self.dimensions
        out_w, out_h = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
        level = self.best_level_for_downsample(downsample)
        level_w, level_h = self.level_dimensions[level]
        level_ds = self.level_downsamples[level]
        fy = level_h / out_h  # level px per output row
        rows_per_band = max(1, int(max_band_px / max(1.0, level_w * fy)))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for r0 in range(0, out_h, rows_per_band):
            r1 = min(out_h, r0 + rows_per_band)
            y_lo, y_hi = int(math.floor(r0 * fy)), min(level_h, int(math.ceil(r1 * fy)))
            band = self.read_region(
                (0, round(y_lo * level_ds)), level, (level_w, max(1, y_hi - y_lo))
            )  # contiguous for PIL
            box = (0.0, r0 * fy - y_lo, float(level_w), r1 * fy - y_lo)
            resized = Image.fromarray(band).resize((out_w, r1 - r0), Image.Resampling.BOX, box=box)
            out[r0:r1] = np.asarray(resized)
        return out


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's (non-premultiplied) RGBA onto white; uint8 (h, w, 3), possibly a view."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.size and alpha.min() < 255:
        a = alpha[..., None].astype(np.float32) / 255.0
        return (rgb.astype(np.float32) * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)
    return rgb


def open_slide(
    path: str | os.PathLike, mpp_override: float | None = None, default_mpp: float | None = None
) -> Slide:
    """Open a whole-slide image with OpenSlide and resolve its MPP (µm per level-0 px).

    ``mpp_override`` wins over metadata when given; ``default_mpp`` is used only when the slide has no
    MPP metadata. Errors (all :class:`SlideError`
    with one line naming the file and the fix): missing path, a folder, an empty file, a file
    OpenSlide does not recognise, a truncated/corrupt TIFF, and no MPP without override.
    """
    import openslide

    path = Path(path).expanduser()
    if not path.exists():
        raise SlideNotFoundError(
            f"slide {path} does not exist; check the path (relative paths in a manifest are relative to its folder)"
        )
    if path.is_dir():
        raise SlideError(
            f"slide path {path} is a folder; give the slide file itself (e.g. .svs, .tif, .ndpi, .mrxs)"
        )
    if path.stat().st_size == 0:
        raise SlideError(f"slide {path} is an empty file; copy the slide again")
    for name, value in (("mpp_override", mpp_override), ("default_mpp", default_mpp)):
        if value is not None:
            try:
                check_mpp(
                    value, what=name, fix="give a plausible µm-per-pixel value (0.25 at 40x, 0.5 at 20x)"
                )
            except ValueError as exc:
                raise SlideError(f"slide {path}: {exc}") from None
    try:
        handle = openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError:
        if _looks_like_tiff(path):
            raise SlideError(
                f"slide {path} is a TIFF that OpenSlide cannot read (truncated, corrupt, or not tiled); copy it again or convert it to a tiled pyramidal TIFF"
            ) from None
        raise SlideError(
            f"slide {path} is not a whole-slide image format OpenSlide supports (.svs, .tif, .ndpi, .mrxs, .scn, ...); check the file"
        ) from None
    except openslide.OpenSlideError as exc:
        raise SlideError(
            f"slide {path} cannot be read ({exc}); the file may be truncated or corrupt: copy it again"
        ) from None
    props = dict(handle.properties)
    meta_mpp, source = mpp_from_properties(props)
    if mpp_override is not None:
        override = float(mpp_override)
        if meta_mpp is not None and abs(override - meta_mpp) > 0.1 * meta_mpp:
            warnings.warn(
                f"slide {path}: mpp_override={override} differs from its metadata ({source}={meta_mpp}); using the override",
                UserWarning,
                stacklevel=2,
            )
        return Slide(path, handle, override, "override")
    if meta_mpp is None and default_mpp is not None:
        return Slide(path, handle, float(default_mpp), "default_mpp")
    if meta_mpp is None:
        handle.close()
        raise MissingMPPError(f"slide {path} has no microns-per-pixel (MPP) metadata; {MPP_FIX}")
    return Slide(path, handle, meta_mpp, source)


def pyramid_table(slide: Slide, target_mpp: float) -> pd.DataFrame:
    """The slide's pyramid levels (size in px, downsample, µm/px) and which level a read at
    ``target_mpp`` µm/px uses: the deepest level not coarser than the target (then resized)."""
    target_mpp = check_mpp(target_mpp, what="target_mpp")
    chosen = slide.best_level_for_downsample(target_mpp / slide.mpp)
    rows = [
        {
            "level": level,
            "width_px": w,
            "height_px": h,
            "downsample": ds,
            "mpp": slide.mpp * ds,
            "read for target": "yes" if level == chosen else "",
        }
        for level, ((w, h), ds) in enumerate(zip(slide.level_dimensions, slide.level_downsamples))
    ]
    return pd.DataFrame(rows).set_index("level")
