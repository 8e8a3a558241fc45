"""Overlapping segments handed to highdicom as bits give the frames the stacked masks give, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.results import encoding
from pipelines.results import seg as seg_module
from pipelines.results.seg import build_segmentation, segment_bits
from pipelines.upstream.highdicom_seg import SegmentBits
from pipelines.types import Code, Segment
from pipelines.volume import load_series
from tests.support.results import make_result, seg_sr_options, write_enhanced_ct


def _build(volume, **values):  # type: ignore[no-untyped-def]
    result = make_result(volume, overlapping=True)
    return build_segmentation(
        volume, result, seg_sr_options(**values), series_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        tracking_uids=[f"1.2.826.0.1.3680043.8.498.3.{s.number}" for s in result.segments],
    )


def _same_frames(volume, monkeypatch, **values) -> None:  # type: ignore[no-untyped-def]
    as_bits = _build(volume, **values)
    monkeypatch.setattr(seg_module, "MAX_BIT_SEGMENTS", 0)  # the stacked one-byte-per-segment masks instead
    stacked = _build(volume, **values)

    assert as_bits.SegmentsOverlap == stacked.SegmentsOverlap == "YES"
    assert as_bits.NumberOfFrames == stacked.NumberOfFrames
    assert as_bits.PixelData == stacked.PixelData
    assert encoding._per_frame_element(as_bits).value == encoding._per_frame_element(stacked).value


@pytest.mark.parametrize("omit_empty_frames", [False, True], ids=["all-frames", "empty-frames-omitted"])
def test_bits_give_the_frames_of_stacked_masks(series_volume, monkeypatch, omit_empty_frames):
    _same_frames(series_volume(orientation="oblique", reverse=True, shuffle=True), monkeypatch,
                 omit_empty_frames=omit_empty_frames)


def test_bits_give_the_frames_of_stacked_masks_for_an_enhanced_source(tmp_path, monkeypatch):
    _same_frames(load_series([write_enhanced_ct(tmp_path / "source", shuffle=True)]), monkeypatch)


def test_each_segment_has_its_own_bit():
    masks = np.zeros((3, 2, 2, 2), bool)
    masks[0, 0], masks[1, :, 0], masks[2, 1, 1, 1] = True, True, True
    tissue = Code("85756007", "SCT", "Tissue")
    segments = [Segment(n, f"s{n}", tissue, tissue, masks[n - 1]) for n in (1, 2, 3)]

    bits = segment_bits(segments, (2, 2, 2), slab=1)

    for number in (1, 2, 3):
        assert np.array_equal((bits >> (number - 1)) & 1, masks[number - 1])
    assert not isinstance(bits, SegmentBits)

