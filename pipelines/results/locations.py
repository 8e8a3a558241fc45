"""Where a segment or a finding is drawn: its key slice and the outline, box, circle or point on that slice.

Image coordinates follow DICOM (PS3.3 C.18.6.1.1): (column, row) with the top left corner of the top left
pixel at (0, 0), so the centre of voxel (i, j) is (i + 0.5, j + 0.5). Outlines trace the boundary between the
segment's pixels and the others (scikit-image's marching squares at level 0.5), closed: the last point repeats
the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import measure

from pipelines.types import Finding, Point3, Segment, Volume



@dataclass(frozen=True)
class SliceGraphic:
    """A 2D graphic on slice ``k``: DICOM graphic type and (column, row) points, shape (n, 2)."""

    k: int
    graphic_type: str  # POINT, POLYLINE (closed) or ELLIPSE
    points: np.ndarray


def key_slice(segment: Segment) -> int:
    """The slice where the segment has the most voxels (the first of equals); ValueError if it is empty."""
    if segment.empty:
        raise ValueError(f"segment {segment.number} ({segment.label}) is empty: it has no key slice")
    return int(np.argmax(segment.slice_areas()))


def outline(segment: Segment, k: int) -> SliceGraphic:
    """The boundary of the segment's largest connected region on slice ``k``, as a closed polyline."""
    if segment.empty or not segment.box[0].start <= k < segment.box[0].stop:
        raise ValueError(f"segment {segment.number} ({segment.label}) has no voxel on slice {k}")
    plane = segment.cropped[k - segment.box[0].start]  # the segment's box only: cheaper than the whole slice
    labels = measure.label(plane, connectivity=1)
    if labels.max() == 0:
        raise ValueError(f"segment {segment.number} ({segment.label}) has no voxel on slice {k}")
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    region = np.pad(labels == largest, 1)  # a region touching the box's edge still gets a closed contour
    contours = measure.find_contours(region.astype(np.float32), 0.5)
    boundary = max(contours, key=len)  # the outer boundary is the longest; holes are inside it
    boundary = without_collinear_points(boundary)
    # Back to the slice (undo the padding, add the box's offset), then DICOM's pixel origin.
    rows = boundary[:, 0] - 1 + segment.box[1].start + 0.5
    columns = boundary[:, 1] - 1 + segment.box[2].start + 0.5
    points = np.column_stack([columns, rows])
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return SliceGraphic(k, "POLYLINE", points)


def without_collinear_points(closed: np.ndarray) -> np.ndarray:
    """A closed polyline (first point repeated last) without the points that lie on a straight run: the same
    outline, exactly, in fewer points (a pixel boundary traces many)."""
    ring = closed[:-1]
    before, after = ring - np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0) - ring
    turns = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    kept = ring[turns] if turns.any() else ring[:1]
    return np.vstack([kept, kept[:1]])


def nearest_slice(volume: Volume, xyz: Point3) -> tuple[int, float, float]:
    """The slice nearest a patient point and the point's continuous voxel (i, j) projected onto it.

    Raises ValueError when the point lies outside the volume's slab of slices.
    """
    i, j, k = volume.to_voxel(xyz)
    slices = volume.array.shape[0]
    if not -0.5 <= k <= slices - 0.5:
        raise ValueError(f"point {xyz} lies outside the series' slices (slice index {k:.1f} of {slices})")
    return min(int(round(k)), slices - 1), i, j


def point_graphic(volume: Volume, xyz: Point3) -> SliceGraphic:
    """A POINT on the slice nearest ``xyz``."""
    k, i, j = nearest_slice(volume, xyz)
    return SliceGraphic(k, "POINT", np.array([[i + 0.5, j + 0.5]]))


def circle_graphic(volume: Volume, xyz: Point3, diameter_mm: float) -> SliceGraphic:
    """An ELLIPSE (a circle in mm) of ``diameter_mm`` around ``xyz`` on its nearest slice: the ends of its
    horizontal axis, then of its vertical axis, as PS3.3 C.18.6.1.2 orders them."""
    k, i, j = nearest_slice(volume, xyz)
    column_spacing, row_spacing, _ = volume.spacing
    across, down = diameter_mm / 2 / column_spacing, diameter_mm / 2 / row_spacing
    c, r = i + 0.5, j + 0.5
    return SliceGraphic(k, "ELLIPSE", np.array([[c - across, r], [c + across, r], [c, r - down], [c, r + down]]))


_BOX_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
"""The 12 edges of a box whose 8 corners are numbered by bits (x, y, z: low 0, high 1)."""


def box_graphic(volume: Volume, box: tuple[Point3, Point3], k: int | None = None) -> SliceGraphic:
    """Where a patient-axis box cuts slice ``k`` (default: the slice nearest its centre), as a closed polyline.

    On an axial slice that is the box's rectangle; on an oblique one, the polygon where the slice plane meets
    the box. Raises ValueError when the slice misses the box.
    """
    low, high = np.asarray(box[0], float), np.asarray(box[1], float)
    if k is None:
        k = nearest_slice(volume, tuple((low + high) / 2))[0]  # type: ignore[arg-type]
    corners = np.array([[(high if n >> axis & 1 else low)[axis] for axis in range(3)] for n in range(8)])
    voxels = (np.linalg.inv(volume.affine) @ np.c_[corners, np.ones(8)].T)[:3].T  # (8, 3): i, j, k
    crossings = []
    for a, b in _BOX_EDGES:
        ka, kb = voxels[a, 2] - k, voxels[b, 2] - k
        if ka == kb:
            if ka == 0:
                crossings += [voxels[a, :2], voxels[b, :2]]
            continue
        t = ka / (ka - kb)
        if 0.0 <= t <= 1.0:
            crossings.append(voxels[a, :2] + t * (voxels[b, :2] - voxels[a, :2]))
    if len(crossings) < 3:
        raise ValueError(f"box {box} does not cross slice {k}")
    ij = np.unique(np.round(np.array(crossings), 6), axis=0)
    centre = ij.mean(axis=0)
    ij = ij[np.argsort(np.arctan2(ij[:, 1] - centre[1], ij[:, 0] - centre[0]))]
    points = np.vstack([ij, ij[:1]]) + 0.5
    return SliceGraphic(k, "POLYLINE", points)


def finding_graphic(volume: Volume, finding: Finding, segment: Segment | None) -> SliceGraphic:
    """How a finding is drawn: its segment's outline on the segment's key slice, else its box on the slice
    nearest the box's centre, else a circle of its diameter, else its point."""
    if segment is not None and not segment.empty:
        return outline(segment, key_slice(segment))
    if finding.box is not None:
        return box_graphic(volume, finding.box)
    if finding.point is not None and finding.diameter_mm is not None:
        return circle_graphic(volume, finding.point, finding.diameter_mm)
    if finding.point is not None:
        return point_graphic(volume, finding.point)
    raise ValueError(
        f"finding {finding.label!r}: its segment {finding.segment_number} is empty and it has no point or box"
    )


def to_patient_points(volume: Volume, graphic: SliceGraphic) -> np.ndarray:
    """The graphic's points in patient coordinates (LPS mm), shape (n, 3)."""
    ij = graphic.points - 0.5
    ijk1 = np.c_[ij, np.full(len(ij), graphic.k), np.ones(len(ij))]
    return (volume.affine @ ijk1.T)[:3].T
