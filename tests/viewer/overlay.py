"""Reading a viewer screenshot: where the phantom's bright squares are and where overlay colour is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    """A pixel bounding box (inclusive start, exclusive stop)."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def area(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)

    def grown(self, margin: int) -> "Box":
        return Box(self.row0 - margin, self.row1 + margin, self.col0 - margin, self.col1 + margin)

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape[:2], bool)
        out[max(self.row0, 0) : max(self.row1, 0), max(self.col0, 0) : max(self.col1, 0)] = True
        return out


def bright_squares(rgb: np.ndarray, min_pixels: int = 400) -> list[Box]:
    """Bounding boxes of the large bright grey regions (the phantom's 400 HU squares), largest first."""
    grey = (rgb.max(axis=2).astype(int) - rgb.min(axis=2)) < 12
    bright = grey & (rgb.mean(axis=2) > 150)
    labels, count = ndimage.label(bright)
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None or (labels[found] == index).sum() < min_pixels:
            continue
        boxes.append(Box(found[0].start, found[0].stop, found[1].start, found[1].stop))
    return sorted(boxes, key=lambda box: -box.area)


def overlay_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels in segment 1's red overlay colour (grey CT pixels and OHIF's blue UI are not counted)."""
    r, g, b = (rgb[..., channel].astype(int) for channel in range(3))
    return (r - g > 40) & (r - b > 40)


def new_square(with_target: list[Box], without_target: list[Box]) -> Box:
    """The bright square present on the target slice but not on a slice without the target."""
    def overlaps(a: Box, b: Box) -> bool:
        return a.row0 < b.row1 and b.row0 < a.row1 and a.col0 < b.col1 and b.col0 < a.col1

    candidates = [box for box in with_target if not any(overlaps(box, other) for other in without_target)]
    if len(candidates) != 1:
        raise AssertionError(f"expected one target square on screen, found {candidates} (all: {with_target})")
    return candidates[0]
