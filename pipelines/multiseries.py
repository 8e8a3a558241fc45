"""Several series of one study as the input channels of one model, on the grid of one of them.

A model taking four MR sequences as channels needs them voxel for voxel on one grid. Each input series is
sampled at the voxel centres of the reference series (trilinear, through patient coordinates, so series of
other orientation, spacing or extent line up); outside its own extent a series gives its lowest value.
Series must share a frame of reference: without one the scanner's positions do not relate, and no
registration is attempted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from pipelines.types import UnsupportedSeries, Volume

logger = logging.getLogger(__name__)

SAME_GRID_TOLERANCE_MM = 1e-3
KJI_FROM_IJK = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
"""Swaps (i, j, k) voxel coordinates into the [k, j, i] order of the arrays (its own inverse)."""


def same_grid(volume: Volume, reference: Volume) -> bool:
    return volume.array.shape == reference.array.shape and bool(
        np.allclose(volume.affine, reference.affine, atol=SAME_GRID_TOLERANCE_MM))


def resample_onto(volume: Volume, reference: Volume) -> np.ndarray:
    """``volume``'s values at the voxel centres of ``reference`` (``[k, j, i]``, float32)."""
    if same_grid(volume, reference):
        return volume.array
    to_source = np.linalg.inv(volume.affine) @ reference.affine  # reference (i, j, k) -> volume (i, j, k)
    in_arrays = KJI_FROM_IJK @ to_source @ KJI_FROM_IJK
    outside = float(volume.array.min(initial=0.0))
    return ndimage.affine_transform(volume.array, in_arrays[:3, :3], offset=in_arrays[:3, 3],
                                    output_shape=reference.array.shape, order=1, mode="constant", cval=outside,
                                    output=np.float32)


def _frame_of_reference(volume: Volume) -> str:
    return str(getattr(volume.datasets[0], "FrameOfReferenceUID", "") or "")


def stack_series(inputs: Mapping[str, Volume], reference: str) -> Volume:
    """One volume on the reference series' grid with every input as a named channel; the other series'
    headers in ``related`` so results reference them too. Raises UnsupportedSeries naming what does not fit."""
    if reference not in inputs:
        raise UnsupportedSeries(f"the reference input {reference!r} is not among the inputs {sorted(inputs)}")
    base = inputs[reference]
    frame = _frame_of_reference(base)
    channels, related, notes = {}, [], list(base.notes)
    for name, volume in inputs.items():
        other = _frame_of_reference(volume)
        if frame and other and other != frame:
            raise UnsupportedSeries(f"input {name!r} has another frame of reference than {reference!r}; the series "
                                    "cannot be put on one grid without registration")
        channels[name] = resample_onto(volume, base)
        if name != reference:
            related.extend(volume.datasets)
            notes.extend(f"{name}: {note}" for note in volume.notes)
    logger.info("inputs %s put on the grid of %s (%s voxels)", ", ".join(inputs), reference,
                "x".join(str(n) for n in base.array.shape[::-1]))
    return Volume(base.array, base.affine, base.datasets, base.frame_numbers, notes, channels=channels, related=related)
