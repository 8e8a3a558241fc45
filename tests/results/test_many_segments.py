"""A result with many segments makes a SEG whose size follows what the segments cover, not their count."""

from __future__ import annotations

import highdicom as hd
import numpy as np

from pipelines.results.seg import AUTO_KEEP_EMPTY_FRAMES_SEGMENTS, omits_empty_frames
from pipelines.settings import ResultOptions
from pipelines.types import Segment
from tests.support.results import ANATOMY, LUNG, SLICES, dciodvfy_errors, make_result
from tests.results.test_seg import write_seg


def test_auto_keeps_empty_frames_for_a_few_segments_and_drops_them_for_many(series_volume, tmp_path):
    assert not omits_empty_frames(ResultOptions(), AUTO_KEEP_EMPTY_FRAMES_SEGMENTS)
    assert omits_empty_frames(ResultOptions(), AUTO_KEEP_EMPTY_FRAMES_SEGMENTS + 1)
    assert not omits_empty_frames(ResultOptions(omit_empty_frames=False), 100)
    volume = series_volume()
    label_map = np.zeros(volume.array.shape, dtype=np.uint8)
    for value in range(1, 13):  # twelve blocks, each on one slice
        label_map[value - 1, 2:10, 3 * value: 3 * value + 3] = value
    labels = {value: (f"Block {value}", ANATOMY, LUNG, None) for value in range(1, 13)}
    result = make_result(volume, classifications=False)
    result.segments = Segment.from_label_map(label_map, labels)
    result.measurements = []
    path = write_seg(volume, result, ResultOptions(fallback_key_slices=0), tmp_path / "out")
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert int(seg.NumberOfFrames) == 12 < 12 * SLICES
