"""A segmentation bundle's prediction, on the volume's grid, turned into segments without full-size copies.

The prediction (``[channels, x, y, z]`` after the bundle's postprocessing) becomes either one label map
(``[k, j, i]``, one byte per voxel up to 255 labels) shared by all segments, or, for a prediction keeping one
binary channel per structure, one cropped mask per channel. Argmax and casts run a few slices at a time, so no
int64 or float copy of the whole grid is made; the only full-size arrays are the label map and, while it is
reordered, its ``[x, y, z]`` form.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from monai.data import MetaTensor

from pipelines.bundle.errors import BundleRunError
from pipelines.bundle.labels import BundleLabels
from pipelines.types import Segment, SegmentLabel, Volume

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
AFFINE_TOLERANCE_MM = 1e-3
SLAB = 16
"""Slices along z converted at a time."""


def check_grid(prediction: torch.Tensor, volume: Volume, pipeline: str) -> None:
    """Raise when the prediction is not on the volume's grid (the bundle did not invert its resampling)."""
    spatial = tuple(prediction.shape[-3:])
    expected_shape = volume.array.shape[::-1]
    if spatial != expected_shape:
        raise BundleRunError(f"pipeline {pipeline}: the prediction's grid {spatial} is not the volume's {expected_shape} "
                             "after the bundle's postprocessing (it needs Invertd with the preprocessing)")
    if isinstance(prediction, MetaTensor):
        expected = LPS_TO_RAS @ volume.affine
        if not np.allclose(prediction.affine.cpu().numpy(), expected, atol=AFFINE_TOLERANCE_MM):
            raise BundleRunError(f"pipeline {pipeline}: the prediction is not on the volume's grid after the bundle's "
                                 "postprocessing (add Invertd with the preprocessing to its postprocessing)")


def _is_binary(values: torch.Tensor) -> bool:
    for start in range(0, values.shape[-1], SLAB):
        part = values[..., start:start + SLAB]
        if not bool(((part == 0) | (part == 1)).all()):
            return False
    return True


def label_map(prediction: torch.Tensor, largest: int) -> np.ndarray:
    """The ``[k, j, i]`` label map of a one-channel map of values or a many-channel map of scores (argmax)."""
    values = prediction.detach()
    values = values.as_tensor() if isinstance(values, MetaTensor) else values
    channels = values.shape[0] if values.ndim == 4 else 1
    spatial = values.shape[-3:]
    dtype = np.uint8 if max(largest, channels - 1) < 256 else np.uint16
    xyz = np.empty(spatial, dtype=dtype)
    for start in range(0, spatial[2], SLAB):
        part = values[..., start:start + SLAB]
        if channels > 1:
            labels = torch.argmax(part, dim=0)
        else:
            labels = part.reshape(part.shape[-3:])
            labels = torch.round(labels) if labels.is_floating_point() else labels
        xyz[..., start:start + SLAB] = labels.to("cpu").numpy().astype(dtype, copy=False)
    return np.ascontiguousarray(xyz.transpose(2, 1, 0))


def present_values(mapped: np.ndarray) -> list[int]:
    """The values a label map holds, counted a few slices at a time (a whole-map count would be int64)."""
    counts = np.zeros(int(mapped.max(initial=0)) + 1, dtype=np.int64)
    for start in range(0, mapped.shape[0], SLAB):
        part = np.bincount(mapped[start:start + SLAB].ravel(), minlength=len(counts))
        counts += part
    return np.flatnonzero(counts).tolist()


def channel_segments(prediction: torch.Tensor, labels: dict[int, SegmentLabel]) -> list[Segment]:
    """One segment per named channel of a binary many-channel prediction (segments may overlap)."""
    values = prediction.detach()
    segments = []
    for channel in sorted(labels):
        if channel >= values.shape[0]:
            continue
        mask = (values[channel] > 0.5).to("cpu").numpy().transpose(2, 1, 0)
        if not mask.any():
            continue
        label, category, kind, modifier = labels[channel]
        segments.append(Segment(len(segments) + 1, label, category, kind, mask, modifier=modifier))
    return segments


def segments_from_prediction(prediction: torch.Tensor, volume: Volume, labels: BundleLabels, pipeline: str) -> list[Segment]:
    """The non-empty segments the prediction holds; values it holds without a label are logged and left out.

    A prediction keeping one binary channel per name (a bundle without a background channel) gives a segment
    per channel; anything else is read as a label map whose values the labels name.
    """
    check_grid(prediction, volume, pipeline)
    values = prediction if prediction.ndim == 4 else prediction[None]
    named = labels.labels
    if values.shape[0] > 1 and not labels.exclusive and _is_binary(values):
        return channel_segments(values, named)
    if values.shape[0] == 1 and not labels.exclusive:
        named = _values_of_merged_channels(labels, pipeline)
    mapped = label_map(values, max(named, default=0))
    unnamed = sorted(set(present_values(mapped)) - set(named) - {0})
    if unnamed:
        logger.warning("pipeline %s: label values %s of the prediction have no name (bundle metadata or the labels "
                       "setting); they are left out of the results", pipeline, unnamed)
    return Segment.from_label_map(mapped, named, keep_empty=False)


def _values_of_merged_channels(labels: BundleLabels, pipeline: str) -> dict[int, SegmentLabel]:
    """The labels of a one-channel map made from a bundle whose names are of channels, not values: the labels
    setting's values, or value 1 for the one channel a single-structure bundle names."""
    if labels.from_settings:
        return {value: labels.labels[value] for value in labels.from_settings}
    if len(labels.labels) == 1:
        return {1: next(iter(labels.labels.values()))}
    raise BundleRunError(
        f"pipeline {pipeline}: the bundle's postprocessing merges its {len(labels.labels)} named output channels into "
        "one label map, whose values are not channel numbers; name its values in the pipeline's labels setting, or "
        "keep one channel per name by overriding the step of the bundle's postprocessing that merges them")
