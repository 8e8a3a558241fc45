"""The data that flows between volume loading, pipelines and the DICOM result writers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
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


class PipelineFailure(Exception):
    """A job that cannot succeed as it stands: running it again would fail the same way (a bundle that cannot be
    honoured, data the model refuses). The job fails for good with the message, which says what to change, as
    its reason; errors of any other type count as transient and are retried."""


class UnsupportedSeries(PipelineFailure):
    """The series cannot be processed (not one volume, non-image, wrong modality); permanent, with the reason."""
