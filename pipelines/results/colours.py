"""Segment colours shared by the SEG (Recommended Display CIELab Value) and the fallback outlines."""

from __future__ import annotations

# Distinct, saturated colours that stay visible on greyscale CT (RGB).
PALETTE = [
    (255, 64, 64),
    (64, 220, 64),
    (64, 128, 255),
    (255, 200, 0),
    (255, 64, 255),
    (0, 230, 230),
    (255, 140, 0),
    (160, 96, 255),
]


def segment_colour(number: int) -> tuple[int, int, int]:
    """The display colour of segment ``number`` (1-based), cycling through the palette."""
    return PALETTE[(number - 1) % len(PALETTE)]
