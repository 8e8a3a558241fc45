"""Fence: highdicom's Segmentation with three of its private steps replaced, for speed and memory.

Written for highdicom 0.25 to 0.28 (pyproject bounds it below 0.29). ``missing_upstream()`` lists what an
upgrade removed or renamed; tests/test_upstream_fences.py fails loudly when it is not empty. Each override
keeps highdicom's result and only changes how it is reached:

* ``_check_and_cast_pixel_array``: for a 4D array highdicom sums over segments into an int64 array of the
  volume's size to find overlaps (gigabytes and seconds on a 300-slice CT); this checks slice by slice, and
  takes overlapping segments as bits (``SegmentBits``), which ``_get_segment_pixel_array`` unpacks per frame.
* ``_encode_pixels_native``: pydicom's ``pack_bits`` compares each frame with a boolean copy of itself, a third
  of a SEG's build time; 1-bit frames are packed with one cheaper check that they hold only 0 and 1.
* ``_build_luts``: the query tables are built on first use, not in the constructor; a SEG that is only
  written never needs them.

Upstream report (performance, not a bug), to file with highdicom::

    Segmentation.__init__ with a 4D BINARY pixel array (frames x rows x columns x segments) checks segment
    overlap by summing over the last axis into an int64 array of the full size (2.5 GB and several seconds
    for 300 x 512 x 512 x 4). A per-frame check (or summing in uint8) gives the same answer in a fraction of
    the memory and time. Separately, _build_luts runs in the constructor although only the query methods
    (get_volume, get_pixels_by_source_instance...) need its tables; building them lazily saves ~0.15 s per
    1,200 frames for SEGs that are only written.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np

MAX_BIT_SEGMENTS = 8
"""Overlapping BINARY segments up to this many travel to highdicom as one bit each of a uint8 volume."""


class SegmentBits(np.ndarray):
    """Overlapping binary segments as one uint8 volume, bit ``n - 1`` set where segment ``n`` is.

    A quarter of the memory of the masks stacked one byte per segment (for four segments), and quicker to
    fill; highdicom's per-frame hook takes each segment's bit out again.
    """


_QUERY_TABLE_ATTRIBUTES = frozenset(
    {"_db_con", "_dim_ind_col_names", "_dim_ind_pointers", "_file_reader", "_is_tiled_full",
     "_missing_reference_instances"}
)
"""What highdicom's ``_build_luts`` sets: the tables behind its frame queries (``get_volume`` and the like)."""


class FastSegmentation(hd.seg.Segmentation):
    """highdicom's Segmentation taking overlapping segments as bits, with a lighter check of stacked masks.

    Why: for a 4D array highdicom sums over segments into an int64 array of the volume's size (gigabytes and
    seconds for a 300-slice CT); checking slice by slice gives the same answer in a fraction of both. Segments
    as bits (``SegmentBits``) avoid the 4D array altogether; highdicom makes the same frames from them.

    Its query tables are built on first use rather than in the constructor: a SEG that is only written never
    needs them, and they take time in proportion to the frames.
    """

    def _build_luts(self) -> None:
        self.__dict__["_query_tables_pending"] = True

    def __getattr__(self, name: str) -> Any:
        if name in _QUERY_TABLE_ATTRIBUTES and self.__dict__.pop("_query_tables_pending", False):
            hd.seg.Segmentation._build_luts(self)
            return getattr(self, name)
        return super().__getattr__(name)

    @staticmethod
    def _get_segment_pixel_array(
        pixel_array: np.ndarray,
        segment_number: int,
        described_segment_numbers: np.ndarray,
        segmentation_type: hd.seg.SegmentationTypeValues,
        max_fractional_value: int,
        dtype: type,
    ) -> np.ndarray:
        if isinstance(pixel_array, SegmentBits):
            present = np.bitwise_and(pixel_array.view(np.ndarray), np.uint8(1 << (segment_number - 1))) != 0
            return present.view(np.uint8).astype(dtype, copy=False)
        return hd.seg.Segmentation._get_segment_pixel_array(
            pixel_array, segment_number, described_segment_numbers, segmentation_type, max_fractional_value, dtype
        )

    @classmethod
    def _check_and_cast_pixel_array(
        cls,
        pixel_array: Any,
        segment_numbers: np.ndarray,
        segmentation_type: hd.seg.SegmentationTypeValues,
        dtype: type,
    ) -> tuple[Any, hd.seg.SegmentsOverlapValues]:
        if isinstance(pixel_array, SegmentBits):  # made by segment_bits() for segments known to overlap
            if segmentation_type != hd.seg.SegmentationTypeValues.BINARY or len(segment_numbers) > MAX_BIT_SEGMENTS:
                raise ValueError("segments as bits make a BINARY SEG of at most 8 segments")
            return pixel_array, hd.seg.SegmentsOverlapValues.YES
        if not (
            isinstance(pixel_array, np.ndarray)
            and pixel_array.ndim == 4
            and pixel_array.dtype == np.uint8
            and segmentation_type == hd.seg.SegmentationTypeValues.BINARY
            and pixel_array.shape[-1] == len(segment_numbers)
        ):
            return super()._check_and_cast_pixel_array(pixel_array, segment_numbers, segmentation_type, dtype)
        by_segment = np.moveaxis(pixel_array, -1, 0)  # contiguous again for arrays from stacked_array()
        overlap = False
        for k in range(by_segment.shape[1]):
            planes = by_segment[:, k]
            if planes.max(initial=0) > 1:
                raise ValueError("stacked segment masks must hold only 0 and 1")
            if not overlap and planes.shape[0] > 1:
                overlap = bool((planes.sum(axis=0, dtype=np.uint8) > 1).any())
        return pixel_array, (hd.seg.SegmentsOverlapValues.YES if overlap else hd.seg.SegmentsOverlapValues.NO)

    def _encode_pixels_native(self, planes: np.ndarray) -> bytes:
        """1-bit frames packed as pydicom's pack_bits packs them, with a cheaper check that they hold only 0 and 1.

        Why: pack_bits compares each frame with a boolean copy of itself, a third of the SEG's build time.
        """
        if self.BitsAllocated != 1 or planes.dtype not in (np.bool_, np.uint8):
            return super()._encode_pixels_native(planes)
        if planes.dtype == np.uint8 and planes.max(initial=0) > 1:
            raise ValueError("Only binary arrays (containing ones or zeroes) can be packed.")
        return np.packbits(planes.ravel(), bitorder="little").tobytes()


OVERRIDDEN = ("_build_luts", "_get_segment_pixel_array", "_check_and_cast_pixel_array", "_encode_pixels_native")


def missing_upstream() -> list[str]:
    """What this fence overrides that the installed highdicom no longer has (empty when all is there)."""
    return [f"highdicom.seg.Segmentation.{name}" for name in OVERRIDDEN
            if not callable(getattr(hd.seg.Segmentation, name, None))]
