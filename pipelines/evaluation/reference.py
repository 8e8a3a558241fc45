"""References a pipeline is scored against: the segments of a DICOM SEG placed on the series' grid, and the
classifications of a ``reference.json``.

A SEG made in a viewer (OHIF, 3D Slicer) or by a research team refers to the source images by SOP Instance
UID; its frames are placed on the volume's slices through those references. A SEG without them is placed by
its geometry when it lies on the same voxel grid as the series (any axis order or direction).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from pipelines.evaluation.findings import ReferenceError, code_of
from pipelines.types import Code, Volume

logger = logging.getLogger(__name__)

GRID_TOLERANCE = 0.01
"""Largest deviation, in voxels, of a reference voxel from a voxel of the series' grid."""


@dataclass
class ReferenceSegment:
    """One segment of a reference SEG, as a boolean mask on the series' ``[k, j, i]`` grid."""

    number: int
    label: str
    type: Code
    mask: np.ndarray


def _describe(seg: hd.seg.Segmentation) -> list[tuple[int, str, Code]]:
    described = []
    for item in seg.SegmentSequence:
        types = getattr(item, "SegmentedPropertyTypeCodeSequence", None)
        described.append((int(item.SegmentNumber), str(getattr(item, "SegmentLabel", "")), code_of(types[0] if types else None)))
    return described


def _by_source_instances(seg: hd.seg.Segmentation, volume: Volume, numbers: list[int]) -> np.ndarray | None:
    """Masks ``[segment, k, j, i]`` through the frames' references to the source instances; None without them."""
    if volume.frame_numbers is not None:
        return None
    source_uids = [str(ds.SOPInstanceUID) for ds in volume.datasets]
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    if not referenced & set(source_uids):
        return None
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_uids, segment_numbers=numbers, assert_missing_frames_are_empty=True, dtype=np.uint8
        )
    except (ValueError, KeyError, RuntimeError) as exc:
        logger.info("reference SEG %s: frames not placed by source instance (%s); trying its geometry", seg.SOPInstanceUID, exc)
        return None
    return np.moveaxis(pixels != 0, -1, 0)


def _by_geometry(seg: hd.seg.Segmentation, volume: Volume, numbers: list[int]) -> np.ndarray:
    """Masks ``[segment, k, j, i]`` from the SEG's own geometry, which must fall on the series' voxel grid."""
    try:
        reference = seg.get_volume(segment_numbers=numbers, dtype=np.uint8)
    except (ValueError, RuntimeError) as exc:
        raise ReferenceError(f"the SEG references none of the series' images and its frames form no volume: {exc}") from exc
    ours = volume.affine[:, [2, 1, 0, 3]]  # our affine takes (i, j, k); the arrays are indexed [k, j, i]
    mapping = np.linalg.inv(ours) @ np.asarray(reference.affine)
    linear = mapping[:3, :3]
    if not (np.allclose(np.abs(linear).sum(axis=0), 1, atol=GRID_TOLERANCE) and np.allclose(np.round(linear), linear, atol=GRID_TOLERANCE)):
        raise ReferenceError("the SEG lies on a different voxel grid (spacing or orientation) than the series")
    array = np.asarray(reference.array)
    if array.ndim == 3:
        array = array[..., None]
    masks = np.zeros((len(numbers), *volume.array.shape), dtype=bool)
    for index in range(len(numbers)):
        found = np.nonzero(array[..., index])
        if not found[0].size:
            continue
        points = mapping[:3, :3] @ np.vstack(found) + mapping[:3, 3:4]
        rounded = np.round(points).astype(np.int64)
        if not np.allclose(points, rounded, atol=GRID_TOLERANCE):
            raise ReferenceError("the SEG's voxels fall between the series' voxels (a shifted grid)")
        inside = np.all((rounded >= 0) & (rounded < np.array(volume.array.shape)[:, None]), axis=0)
        if not inside.all():
            logger.info("reference SEG %s: %d voxels outside the series dropped", seg.SOPInstanceUID, int((~inside).sum()))
        masks[index][tuple(rounded[:, inside])] = True
    return masks


def read_reference_seg(source: Path | Dataset, volume: Volume) -> list[ReferenceSegment]:
    """The segments of the SEG at ``source`` (a path or a read dataset) on ``volume``'s grid.

    Raises ReferenceError when it is no readable SEG of this series' frame of reference or does not fit it.
    """
    try:
        seg = hd.seg.segread(source) if isinstance(source, Path) else hd.seg.Segmentation.from_dataset(source, copy=False)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ReferenceError(f"not a readable DICOM SEG: {exc}") from exc
    frame_of_reference = getattr(volume.datasets[0], "FrameOfReferenceUID", None)
    if frame_of_reference and getattr(seg, "FrameOfReferenceUID", frame_of_reference) != frame_of_reference:
        raise ReferenceError("the SEG belongs to another frame of reference than the series")
    described = _describe(seg)
    numbers = [number for number, _, _ in described]
    if not numbers:
        raise ReferenceError("the SEG describes no segment")
    masks = _by_source_instances(seg, volume, numbers)
    if masks is None:
        masks = _by_geometry(seg, volume, numbers)
    return [
        ReferenceSegment(number, label, kind, masks[index])
        for index, (number, label, kind) in enumerate(described)
    ]


def read_reference_classifications(path: Path) -> dict[str, str]:
    """``{"classifications": {concept: value}}`` of a ``reference.json``; raises ReferenceError naming the problem."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReferenceError(f"{path.name}: not readable JSON: {exc}") from exc
    found = data.get("classifications") if isinstance(data, dict) else None
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
        raise ReferenceError(
            f'{path.name}: expected {{"classifications": {{"<concept meaning or code value>": "<value meaning or code value>"}}}}'
        )
    return dict(found)
