"""The data that flows between volume loading, pipelines and the DICOM result writers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Code:
    """A coded concept: (value, scheme designator, meaning), e.g. ("123037004", "SCT", "Anatomical Structure")."""

    value: str
    scheme: str
    meaning: str


Point3 = tuple[float, float, float]
"""A point in patient coordinates: DICOM LPS millimetres (x to the patient's left, y posterior, z superior)."""


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
    channels: dict[str, np.ndarray] | None = None
    """For a model taking several series: each input series by its name, resampled onto this volume's grid
    (``[k, j, i]``, the same shape as ``array``); ``array`` is the reference series among them."""
    related: list[Dataset] = field(default_factory=list)
    """Headers of the other source series' instances (``channels``), which results reference too."""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (column, row, slice) in mm."""
        return tuple(float(np.linalg.norm(self.affine[:3, axis])) for axis in range(3))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    def to_patient(self, ijk: Sequence[float]) -> Point3:
        """Patient coordinates (LPS mm) of continuous voxel coordinates ``(i, j, k)`` (integers: voxel centres)."""
        x, y, z = (self.affine @ np.array([*ijk, 1.0], dtype=float))[:3]
        return (float(x), float(y), float(z))

    def to_voxel(self, xyz: Sequence[float]) -> tuple[float, float, float]:
        """Continuous voxel coordinates ``(i, j, k)`` of a point in patient coordinates (LPS mm)."""
        i, j, k = (np.linalg.inv(self.affine) @ np.array([*xyz, 1.0], dtype=float))[:3]
        return (float(i), float(j), float(k))


SegmentLabel = tuple[str, Code, Code, "Code | None"]
"""A segment's label, category, type and type modifier (None when the type needs none)."""

Box = tuple[slice, slice, slice]
"""A bounding box on a volume's grid, ``[k, j, i]`` slices."""
EMPTY_BOX: Box = (slice(0, 0), slice(0, 0), slice(0, 0))


def bounding_box(mask: np.ndarray) -> Box:
    """The smallest box holding every true voxel of a 3D ``mask`` (an empty box when there is none)."""
    mask = np.asarray(mask)
    found = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8))
    return found[0] if found and found[0] is not None else EMPTY_BOX  # type: ignore[return-value]


class Segment:
    """One segment of a segmentation, with its codes and where it lies on the volume's grid.

    The segment is kept as its bounding ``box`` and the boolean mask inside it, or as a value of a label map
    shared by several segments: a result with a hundred segments then costs one label map and what its
    segments cover, not a hundred full-size masks. ``mask`` gives the full-size mask when a caller needs it
    (it costs one byte per voxel of the volume); writers use ``box``, ``cropped`` and ``on_slice``.
    """

    def __init__(
        self,
        number: int,
        label: str,
        category: Code,
        type: Code,
        mask: np.ndarray | None = None,
        tracking_id: str | None = None,
        modifier: Code | None = None,
    ) -> None:
        self.number, self.label, self.category, self.type = number, label, category, type
        self.tracking_id = tracking_id
        self.modifier = modifier
        """Qualifies ``type``, e.g. its laterality (SNOMED CT Left or Right, CID 244)."""
        self._label_map: np.ndarray | None = None
        self._value = 0
        self._cropped: np.ndarray | None = None
        self.shape: tuple[int, int, int] = (0, 0, 0)
        self.box: Box = EMPTY_BOX
        if mask is not None:
            self.mask = mask

    @classmethod
    def from_label_map(
        cls, label_map: np.ndarray, labels: dict[int, tuple[str, Code, Code]] | dict[int, "SegmentLabel"], *,
        keep_empty: bool = True,
    ) -> list["Segment"]:
        """One segment per ``labels`` entry (value -> label, category, type[, modifier]), numbered 1.. in value
        order.

        The segments share ``label_map`` (not copied; do not change it afterwards). Bounding boxes come from
        one pass over the map. ``keep_empty`` False leaves out values that occur nowhere.
        """
        values = sorted(labels)
        if not np.issubdtype(label_map.dtype, np.integer):
            raise TypeError(f"a label map holds integers, got {label_map.dtype}")
        boxes = ndimage.find_objects(label_map, max_label=max(values, default=0))
        segments = []
        for value in values:
            box = boxes[value - 1] if 0 < value <= len(boxes) else None
            if box is None and not keep_empty:
                continue
            label, category, kind, *modifier = labels[value]
            segment = cls(len(segments) + 1, label, category, kind, modifier=modifier[0] if modifier else None)
            segment.shape = tuple(label_map.shape)  # type: ignore[assignment]
            segment.box = box or EMPTY_BOX
            segment._label_map, segment._value = label_map, value
            segments.append(segment)
        return segments

    @property
    def cropped(self) -> np.ndarray:
        """The boolean mask inside ``box`` (computed from the label map for segments that share one)."""
        if self._label_map is not None:
            return self._label_map[self.box] == self._value
        assert self._cropped is not None
        return self._cropped

    @property
    def mask(self) -> np.ndarray:
        """The full-size boolean mask on the volume's grid (a new array)."""
        full = np.zeros(self.shape, dtype=bool)
        full[self.box] = self.cropped
        return full

    @mask.setter
    def mask(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask)
        if mask.ndim != 3:
            raise ValueError(f"segment {self.number} ({self.label}): a mask must be 3D [k, j, i], got {mask.shape}")
        self.shape = tuple(mask.shape)  # type: ignore[assignment]
        self.box = bounding_box(mask)
        self._cropped = np.array(mask[self.box], dtype=bool)
        self._label_map = None

    @property
    def empty(self) -> bool:
        return any(part.stop <= part.start for part in self.box)

    @property
    def voxel_count(self) -> int:
        return 0 if self.empty else int(np.count_nonzero(self.cropped))

    def slice_areas(self) -> np.ndarray:
        """Voxels of the segment on each slice of the volume (length ``shape[0]``)."""
        areas = np.zeros(self.shape[0], dtype=np.int64)
        if not self.empty:
            areas[self.box[0]] = np.count_nonzero(self.cropped.reshape(self.cropped.shape[0], -1), axis=1)
        return areas

    def on_slice(self, k: int) -> np.ndarray:
        """The segment's full-size 2D mask on slice ``k``."""
        plane = np.zeros(self.shape[1:], dtype=bool)
        if not self.empty and self.box[0].start <= k < self.box[0].stop:
            plane[self.box[1:]] = self.cropped[k - self.box[0].start]
        return plane

    def in_slab(self, start: int, stop: int) -> tuple[Box, np.ndarray] | None:
        """The part of the segment on slices ``start:stop``: its box relative to the slab and its mask; None if
        the segment has no voxel there."""
        if self.empty:
            return None
        low, high = max(start, self.box[0].start), min(stop, self.box[0].stop)
        if low >= high:
            return None
        cropped = self.cropped[low - self.box[0].start : high - self.box[0].start]
        return (slice(low - start, high - start), self.box[1], self.box[2]), cropped

    def __repr__(self) -> str:
        return f"Segment({self.number}, {self.label!r}, box={self.box}, shape={self.shape})"


@dataclass
class Measurement:
    """A numeric measurement, optionally of one segment (by segment number)."""

    name: Code
    value: float
    unit: Code
    segment_number: int | None = None


MORPHOLOGICALLY_ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
"""The usual category of a finding (CID 7150)."""


def _check_point(point: Sequence[float], what: str) -> Point3:
    if len(point) != 3 or not all(math.isfinite(float(v)) for v in point):
        raise ValueError(f"{what} must be three finite patient coordinates (LPS mm), got {point!r}")
    return (float(point[0]), float(point[1]), float(point[2]))


@dataclass
class Finding:
    """Something a pipeline found at a place: what (coded), where (patient coordinates), and how sure.

    Locations are in the patient coordinate system of the series' frame of reference, DICOM LPS millimetres,
    so they do not depend on the grid a model worked on. At least one of:

    * ``point``: the finding's centre;
    * ``box``: the lowest and highest corner of a box whose edges run along the patient axes (x, y, z), as
      MONAI's detection transforms give boxes in world coordinates;
    * ``segment_number``: the finding's region, a segment of the same result (it goes into the SEG).

    ``diameter_mm`` with a ``point`` draws a circle of that diameter around it. ``measurements`` (their
    ``segment_number`` is ignored) and ``probability`` (0..1, the model's score) are reported with the finding.
    Use :meth:`Volume.to_patient` to turn voxel coordinates into patient coordinates, and :func:`box_of_voxels`
    for a box given on the volume's voxel grid.
    """

    finding_type: Code
    label: str
    category: Code = MORPHOLOGICALLY_ALTERED_STRUCTURE
    point: Point3 | None = None
    box: tuple[Point3, Point3] | None = None
    diameter_mm: float | None = None
    segment_number: int | None = None
    probability: float | None = None
    measurements: list[Measurement] = field(default_factory=list)
    tracking_id: str | None = None

    def __post_init__(self) -> None:
        if self.point is None and self.box is None and self.segment_number is None:
            raise ValueError(f"finding {self.label!r} needs a point, a box or a segment to say where it is")
        if self.point is not None:
            self.point = _check_point(self.point, f"finding {self.label!r}: point")
        if self.box is not None:
            if len(self.box) != 2:
                raise ValueError(f"finding {self.label!r}: a box is (lowest corner, highest corner), got {self.box!r}")
            low = _check_point(self.box[0], f"finding {self.label!r}: box corner")
            high = _check_point(self.box[1], f"finding {self.label!r}: box corner")
            if any(a > b for a, b in zip(low, high)):
                raise ValueError(f"finding {self.label!r}: box corner {low} is not below {high} on every axis")
            self.box = (low, high)
        if self.diameter_mm is not None and not (self.diameter_mm > 0 and math.isfinite(self.diameter_mm)):
            raise ValueError(f"finding {self.label!r}: diameter must be a positive number of mm")
        if self.diameter_mm is not None and self.point is None:
            raise ValueError(f"finding {self.label!r}: a diameter needs the point it is centred on")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"finding {self.label!r}: probability {self.probability} is not within 0..1")

    @property
    def centre(self) -> Point3 | None:
        """The point, else the box's centre; None for a finding located by its segment alone."""
        if self.point is not None:
            return self.point
        if self.box is not None:
            low, high = self.box
            return ((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, (low[2] + high[2]) / 2)
        return None


def box_of_voxels(volume: Volume, low: Sequence[float], high: Sequence[float]) -> tuple[Point3, Point3]:
    """The patient-axis box (lowest, highest corner) holding a box given on ``volume``'s voxel grid.

    ``low`` and ``high`` are continuous voxel coordinates ``(i, j, k)`` (integers at voxel centres). On an
    oblique grid the patient-axis box is larger than the voxel box; it is what MONAI's
    ``AffineBoxToWorldCoordinate`` gives too.
    """
    corners = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1]) for c in (low[2], high[2])])
    world = (volume.affine @ np.c_[corners, np.ones(len(corners))].T)[:3]
    lowest, highest = world.min(axis=1), world.max(axis=1)
    return (
        (float(lowest[0]), float(lowest[1]), float(lowest[2])),
        (float(highest[0]), float(highest[1]), float(highest[2])),
    )


Scope = Literal["series", "study", "image"]


@dataclass
class Classification:
    """A qualitative finding: concept = value, with the model's probability where it gives one.

    ``scope`` says what it concerns: the series the pipeline ran on (default), the whole study, or one image,
    the slice ``slice_index`` of the volume.
    """

    concept: Code
    value: Code
    probability: float | None = None
    scope: Scope = "series"
    slice_index: int | None = None

    def __post_init__(self) -> None:
        if self.scope not in ("series", "study", "image"):
            raise ValueError(f"classification scope must be series, study or image, got {self.scope!r}")
        if (self.scope == "image") != (self.slice_index is not None):
            raise ValueError("an image-level classification needs slice_index, and only it has one")


@dataclass
class PipelineResult:
    """What a pipeline returns for one volume."""

    pipeline: str
    version: str
    algorithm_family: Code
    segments: list[Segment] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    """The algorithm's parameters as reported (TID 4019), e.g. {"threshold": "-950 HU"}."""
    timings: dict[str, float] = field(default_factory=dict)


class PipelineFailure(Exception):
    """A job that cannot succeed as it stands: running it again would fail the same way (a bundle that cannot be
    honoured, data the model refuses). The job fails for good with the message, which says what to change, as
    its reason; errors of any other type count as transient and are retried."""


class UnsupportedSeries(PipelineFailure):
    """The series cannot be processed (not one volume, non-image, wrong modality); permanent, with the reason."""
