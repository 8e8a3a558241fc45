"""The viewer phantom's findings: the target square as a measured segment, a box and a point on the decoy square.

Where each is drawn is known from the phantom's own geometry (its squares' pixel edges and the slices'
headers), not from the SR writer: the segment's outline on its key slice (the first target slice, as every
target slice has the same area), the box on the slice at its centre, the point on its slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.types import Code, Finding, Measurement, PipelineResult, Volume, box_of_voxels
from tests.viewer.phantom import DECOY, TARGET, TARGET_SLICES, PhantomSeries, phantom_result

NODULE = Code("27925004", "SCT", "Nodule")
VOLUME = Code("118565006", "SCT", "Volume")
MILLILITER = Code("mL", "UCUM", "milliliter")
BOX_SLICES = range(3, 6)  # the box finding covers the decoy square on these slices; drawn on the middle one
POINT_SLICE = 20
MISPLACED_COLUMNS = 8  # how far the misplaced box is moved along the rows


@dataclass(frozen=True)
class Expected:
    """Where a finding must appear: the slice (index in the series' datasets) and the image coordinates
    (column, row; DICOM's pixel-corner origin) of its outline's corners or of its point."""

    slice_index: int
    image_points: list[tuple[float, float]]


def _square_corners(square: tuple[slice, slice]) -> list[tuple[float, float]]:
    rows, columns = square
    return [(columns.start, rows.start), (columns.stop, rows.start), (columns.stop, rows.stop),
            (columns.start, rows.stop)]


def expected(series: PhantomSeries) -> dict[str, Expected]:
    """Where the segment, the box and the point must be drawn, by slice index in ``series.datasets``."""
    by_position = _slice_order(series)
    rows, columns = DECOY
    return {
        "segment": Expected(by_position[TARGET_SLICES[0]], _square_corners(TARGET)),
        "box": Expected(by_position[BOX_SLICES[len(BOX_SLICES) // 2]], _square_corners(DECOY)),
        "point": Expected(by_position[POINT_SLICE], [((columns.start + columns.stop) / 2, (rows.start + rows.stop) / 2)]),
    }


def _slice_order(series: PhantomSeries) -> list[int]:
    """Index in ``series.datasets`` of the k-th slice along the normal (the order the phantom built them)."""
    normal = np.cross(series.orientation[:3], series.orientation[3:])
    positions = [float(np.dot(normal, ds.ImagePositionPatient)) for ds in series.datasets]
    return [int(i) for i in np.argsort(positions)]


def to_world(series: PhantomSeries, slice_index: int, image_points: list[tuple[float, float]]) -> list[list[float]]:
    """Patient coordinates of image points (column, row) on one slice, from that slice's own header."""
    ds = series.datasets[slice_index]
    origin = np.asarray(ds.ImagePositionPatient, float)
    orientation = np.asarray(ds.ImageOrientationPatient, float)
    along_row, along_column = orientation[:3], orientation[3:]
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    return [
        list(origin + (c - 0.5) * column_spacing * along_row + (r - 0.5) * row_spacing * along_column)
        for c, r in image_points
    ]


def findings_result(volume: Volume, *, misplaced: bool = False) -> PipelineResult:
    """The target square as a segment with its volume, a box on the decoy over ``BOX_SLICES`` and a point at
    the decoy's centre on ``POINT_SLICE``; ``misplaced`` moves the box ``MISPLACED_COLUMNS`` columns over."""
    result = phantom_result(volume)
    (segment,) = result.segments
    result.measurements = [Measurement(VOLUME, segment.voxel_count * volume.voxel_volume_ml, MILLILITER, 1)]
    shift = MISPLACED_COLUMNS if misplaced else 0
    rows, columns = DECOY
    low = (columns.start - 0.5 + shift, rows.start - 0.5, BOX_SLICES.start - 0.5)
    high = (columns.stop - 0.5 + shift, rows.stop - 0.5, BOX_SLICES.stop - 0.5)
    centre = ((columns.start + columns.stop - 1) / 2, (rows.start + rows.stop - 1) / 2, POINT_SLICE)
    result.findings = [
        Finding(NODULE, "box finding", box=box_of_voxels(volume, low, high), probability=0.8),
        Finding(NODULE, "point finding", point=volume.to_patient(centre), probability=0.6),
    ]
    return result
