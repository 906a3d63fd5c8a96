"""Tumour annotations in the ASAP / Camelyon16 XML format, and their rasterisation.

Layout::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor" Color="#F4FA58">
          <Coordinates>
            <Coordinate Order="0" X="1024.0" Y="980.5"/>
            ...
      <AnnotationGroups> <Group Name="Tumor" .../> </AnnotationGroups>

Coordinates are level-0 pixels, X to the right and Y down. Camelyon16 puts tumour outlines in groups
``Tumor``, ``_0`` and ``_1`` and *exclusions* (normal islands cut out of a tumour outline) in ``_2``;
some tools call that group ``Exclusion``. :func:`read_asap_xml` returns the tumour polygons and
ignores exclusion groups by default (``exclusions=True`` returns them instead), and
:func:`rasterize_polygons` can subtract exclusions from the mask.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mtlutils.core.io import atomic_path

__all__ = [
    "EXCLUSION_GROUPS",
    "AnnotationError",
    "write_asap_xml",
    "read_asap_xml",
    "rasterize_polygons",
    "polygon_area",
]

EXCLUSION_GROUPS = frozenset({"_2", "exclusion", "exclusions", "exclude", "excluded"})


class AnnotationError(ValueError):
    """An annotation file is missing, malformed, or holds an invalid polygon."""


def _is_exclusion(group: str) -> bool:
    return group.strip().lower() in EXCLUSION_GROUPS


def write_asap_xml(
    path: str | os.PathLike,
    polygons: Sequence[np.ndarray],
    group: str | Sequence[str] = "Tumor",
    color: str = "#F4FA58",
) -> Path:
    """Write polygons (each (K, 2) of x, y in level-0 px, K >= 3) as ASAP XML; return the path.

    ``group``: one group name for every polygon, or one per polygon (e.g. Camelyon16's ``["_0", "_2"]``
    for a tumour outline and an exclusion). Written atomically. An empty list writes a valid file with
    no annotation.
    """
    groups_of = [group] * len(polygons) if isinstance(group, str) else [str(g) for g in group]
    if len(groups_of) != len(polygons):
        raise AnnotationError(
            f"write_asap_xml({path}): {len(groups_of)} group names for {len(polygons)} polygons; give one per polygon or a single name"
        )
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i, (poly, poly_group) in enumerate(zip(polygons, groups_of)):
        pts = np.asarray(poly, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3 or not np.isfinite(pts).all():
            raise AnnotationError(
                f"write_asap_xml({path}): polygon {i} must be a finite (K, 2) array of x, y with K >= 3, got shape {pts.shape}"
            )
        ann = ET.SubElement(
            annotations,
            "Annotation",
            Name=f"Annotation {i}",
            Type="Polygon",
            PartOfGroup=poly_group,
            Color=color,
        )
        coords = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(pts):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=repr(float(x)), Y=repr(float(y)))
    groups = ET.SubElement(root, "AnnotationGroups")
    for name in dict.fromkeys(groups_of or ([group] if isinstance(group, str) else [])):
        grp = ET.SubElement(groups, "Group", Name=name, PartOfGroup="None", Color=color)
        ET.SubElement(grp, "Attributes")
    ET.indent(root, space=" ")
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return Path(path)


def read_asap_xml(path: str | os.PathLike, exclusions: bool = False) -> list[np.ndarray]:
    """Read polygons (each (K, 2) float64 x, y in level-0 px) from an ASAP / Camelyon16 XML file.

    By default returns every polygon whose group is *not* an exclusion group (``_2``, ``Exclusion``);
    with ``exclusions=True`` returns only the exclusion polygons. Coordinates are sorted by their
    ``Order`` attribute. Polygons with fewer than 3 points are skipped (they enclose no area).
    Missing file or malformed XML: :class:`AnnotationError` / ``FileNotFoundError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"annotation file {path} does not exist; fix the 'annotation' path or leave it empty"
        )
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise AnnotationError(
            f"annotation file {path} is not valid XML ({exc}); export it again from ASAP / QuPath as ASAP XML"
        ) from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(
            f"annotation file {path} has root <{root.tag}>, expected <ASAP_Annotations> (ASAP / Camelyon16 format)"
        )
    polygons: list[np.ndarray] = []
    for ann in root.iter("Annotation"):
        group = ann.get("PartOfGroup", "") or ""
        if _is_exclusion(group) != exclusions:
            continue
        points = []
        for coord in ann.iter("Coordinate"):
            try:
                order = float(coord.get("Order", len(points)))
                x, y = (
                    float(coord.get("X", "").replace(",", ".")),
                    float(coord.get("Y", "").replace(",", ".")),
                )
            except ValueError:
                raise AnnotationError(
                    f"annotation file {path}: annotation {ann.get('Name', '?')!r} has a coordinate without numeric X/Y; fix or remove it"
                ) from None
            points.append((order, x, y))
        if len(points) < 3:
            continue
        points.sort(key=lambda p: p[0])
        polygons.append(np.array([[x, y] for _, x, y in points], dtype=np.float64))
    return polygons


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula), in squared units of its coordinates."""
    x, y = np.asarray(polygon, dtype=float).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _fill_polygon(mask: np.ndarray, x: np.ndarray, y: np.ndarray, value: bool) -> None:
    """Set ``mask[r, c] = value`` for every pixel centre (c, r) inside the polygon with vertices
    (x, y) in pixel-centre coordinates (even-odd rule; scanline fill, vectorised over edges)."""
    rows_n, cols_n = mask.shape
    r_lo, r_hi = max(0, math.ceil(y.min())), min(rows_n - 1, math.floor(y.max()))
    if r_hi < r_lo:
        return
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    yc = np.arange(r_lo, r_hi + 1, dtype=float)[:, None]
    crosses = ((y <= yc) & (y2 > yc)) | ((y2 <= yc) & (y > yc))  # half-open: each vertex counted once
    dy = np.broadcast_to(y2 - y, crosses.shape)
    xi = x + np.divide((yc - y) * (x2 - x), dy, out=np.zeros(crosses.shape), where=crosses)
    xi = np.sort(np.where(crosses, xi, np.inf), axis=1)
    n_pairs = crosses.sum(axis=1) // 2
    if n_pairs.max(initial=0) == 0:
        return
    k = np.arange(n_pairs.max())
    valid = k[None, :] < n_pairs[:, None]
    # first pixel centre at or right of each entry / exit crossing, limited to the mask
    starts = np.ceil(np.clip(xi[:, 0 : 2 * k.size : 2][valid], 0, cols_n)).astype(np.int64)
    ends = np.ceil(np.clip(xi[:, 1 : 2 * k.size : 2][valid], 0, cols_n)).astype(np.int64)
    rows = np.broadcast_to(np.arange(r_lo, r_hi + 1)[:, None], valid.shape)[valid]
    keep = ends > starts
    diff = np.zeros((rows_n, cols_n + 1), dtype=np.int32)
    np.add.at(diff, (rows[keep], starts[keep]), 1)
    np.add.at(diff, (rows[keep], ends[keep]), -1)
    mask[np.cumsum(diff[:, :-1], axis=1) > 0] = value


def rasterize_polygons(
    polygons: Sequence[np.ndarray],
    shape: tuple[int, int],
    downsample: float = 1.0,
    exclusions: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Boolean mask of ``shape`` (rows, cols) where pixel (r, c) covers level-0 area
    [c·d, (c+1)·d) × [r·d, (r+1)·d) with d = ``downsample``; True inside any polygon and outside every
    exclusion polygon. A pixel is inside when its centre is.
    """
    if downsample <= 0:
        raise ValueError(f"rasterize_polygons: downsample={downsample} must be > 0")
    mask = np.zeros(shape, dtype=bool)
    for polys, value in ((polygons, True), (exclusions, False)):
        for poly in polys:
            pts = np.asarray(poly, dtype=float) / downsample - 0.5  # pixel centres sit at integer coords
            _fill_polygon(mask, pts[:, 0], pts[:, 1], value)
    return mask
