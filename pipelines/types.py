"""The data that flows between volume loading, pipelines and the DICOM result writers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Code:
    """A coded concept: (value, scheme designator, meaning), e.g. ("123037004", "SCT", "Anatomical Structure")."""

    value: str
    scheme: str
    meaning: str


@dataclass
class Volume:
    """A series as one correctly oriented volume.

    ``array`` is indexed ``[k, j, i]`` (slice, row, column), rescale applied (HU for CT), slices sorted by
    position along the slice normal. ``affine`` maps ``(i, j, k, 1)`` voxel indices to patient LPS mm.
    ``datasets`` are the source instances (headers, pixel data may be dropped) in the same order as the slices;
    for an enhanced multi-frame source, ``datasets`` holds the one instance and ``frame_numbers`` its frames.
    """

    array: np.ndarray
    affine: np.ndarray
    datasets: list[Dataset]
    frame_numbers: list[int] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (column, row, slice) in mm."""
        return tuple(float(np.linalg.norm(self.affine[:3, axis])) for axis in range(3))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0


@dataclass
class Segment:
    """One segment of a segmentation: a boolean mask on the volume's grid, with its codes."""

    number: int
    label: str
    category: Code
    type: Code
    mask: np.ndarray
    tracking_id: str | None = None


@dataclass
class Measurement:
    """A numeric measurement, optionally of one segment (by segment number)."""

    name: Code
    value: float
    unit: Code
    segment_number: int | None = None


@dataclass
class Classification:
    """A qualitative finding: concept = value, with the model's probability where it gives one."""

    concept: Code
    value: Code
    probability: float | None = None


@dataclass
class PipelineResult:
    """What a pipeline returns for one volume."""

    pipeline: str
    version: str
    algorithm_family: Code
    segments: list[Segment] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class UnsupportedSeries(Exception):
    """The series cannot be processed (not one volume, non-image, wrong modality); permanent, with the reason."""
