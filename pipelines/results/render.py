"""Pictures of slices with segments on them: one windowing, one palette, one way to draw a segment.

The Secondary Capture fallback, the dashboard's previews and the demo's PNGs all draw with these functions,
and take each segment's colour from the SEG itself (its Recommended Display CIELab Value, which the SEG
writer sets from ``colours.segment_colour``), so a segment has the same colour in the viewer, on the
dashboard and in the fallback images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from scipy import ndimage

from pipelines.results.colours import segment_colour

RGB = tuple[int, int, int]
SOFT_TISSUE_WINDOW = (40.0, 400.0)  # centre, width in HU
LUNG_WINDOW = (-600.0, 1500.0)
FILL_ALPHA = 0.45
OUTLINE_PIXELS = 2


def _first(value: object) -> float:
    """The first value of a possibly multi-valued DS element."""
    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)  # type: ignore[index,arg-type]


def window_of(dataset: Dataset | None, values: np.ndarray | None = None) -> tuple[float, float]:
    """(centre, width) to show a slice with: the source's own first VOI window, a soft-tissue window for CT, or
    the 1st to 99th percentile of ``values`` for other modalities."""
    if dataset is not None:
        try:
            centre, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
            if width > 1:
                return centre, width
        except (AttributeError, TypeError, ValueError, IndexError):
            pass
        if str(dataset.get("Modality", "")) != "CT" and values is not None and values.size:
            low, high = (float(v) for v in np.percentile(values, [1, 99]))
            return (low + high) / 2, max(high - low, 1.0)
    return SOFT_TISSUE_WINDOW


def greyscale(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """A 2D slice of modality values as RGB uint8 (rows, columns, 3) through the (centre, width) window."""
    centre, width = window
    grey = (np.clip((values.astype(np.float32) - (centre - width / 2)) / width, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def enlarged(image: np.ndarray, scale: int) -> np.ndarray:
    """``image`` (rows, columns[, channels]) repeated ``scale`` times in each direction (nearest neighbour)."""
    if scale <= 1:
        return image
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def outline(mask: np.ndarray, thickness: int = OUTLINE_PIXELS) -> np.ndarray:
    """The pixels of a 2D ``mask`` within ``thickness`` of its edge."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)


def draw_segments(image: np.ndarray, masks: Iterable[tuple[np.ndarray, RGB]], *, style: str = "fill",
                  scale: int = 1) -> np.ndarray:
    """``image`` (RGB uint8, already enlarged by ``scale``) with each (2D mask, colour) drawn on it, in order.

    ``style`` "fill" tints the segment (largest first keeps smaller ones inside it visible when the caller
    orders them so); "outline" draws its edge.
    """
    canvas = image.astype(np.float32)
    for mask, colour in masks:
        mask = enlarged(np.asarray(mask, dtype=bool), scale)
        if style == "outline":
            canvas[outline(mask)] = colour
        else:
            canvas[mask] = (1 - FILL_ALPHA) * canvas[mask] + FILL_ALPHA * np.asarray(colour, dtype=np.float32)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def seg_colours(seg: Dataset) -> dict[int, RGB]:
    """Each segment's display colour as the SEG recommends it (the palette's colour where it does not)."""
    colours: dict[int, RGB] = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        lab = item.get("RecommendedDisplayCIELabValue")
        colours[number] = (tuple(int(v) for v in hd.color.CIELabColor.from_dicom_value(list(lab)).to_rgb())
                           if lab is not None else segment_colour(number))  # type: ignore[assignment]
    return colours


def key_slice_indices(areas: Sequence[int] | np.ndarray, count: int) -> list[int]:
    """The ``count`` slices with the largest segmented area, in slice order (the middle one when none has any)."""
    areas = np.asarray(areas)
    if areas.size == 0:
        return []
    if areas.max(initial=0) <= 0:
        return [len(areas) // 2]
    return sorted(np.argsort(-areas, kind="stable")[:count].tolist())
