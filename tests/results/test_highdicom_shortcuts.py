"""pacsnode's shortcuts inside highdicom change its speed, never its answers."""

from __future__ import annotations

import numpy as np
import pytest
from highdicom import _standard_utils
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    MRImageStorage,
    SegmentationStorage,
)

from pipelines.upstream import highdicom_iod as iod_lookup
from pipelines.results.seg import build_segmentation
from tests.support.results import make_result, seg_sr_options

SOP_CLASSES = [CTImageStorage, EnhancedCTImageStorage, MRImageStorage, SegmentationStorage, ComprehensiveSRStorage]


@pytest.mark.parametrize("sop_class_uid", SOP_CLASSES, ids=lambda uid: uid.name)
@pytest.mark.parametrize("attribute", ["NumberOfFrames", "PixelData", "ContentDate", "FloatPixelData"])
def test_memoized_iod_lookup_answers_as_highdicom(sop_class_uid, attribute):
    for exclude in (None, ["IconImageSequence"]):
        expected = iod_lookup._walk_tables(attribute, sop_class_uid, exclude)
        assert iod_lookup.is_attribute_in_iod(attribute, sop_class_uid, exclude) is expected
        assert iod_lookup.is_attribute_in_iod(attribute, sop_class_uid, exclude) is expected  # from memory


def test_highdicom_asks_the_memoized_lookup():
    assert _standard_utils.is_attribute_in_iod is iod_lookup.is_attribute_in_iod
    with pytest.raises(KeyError, match="No IOD found"):
        _standard_utils.is_attribute_in_iod("NumberOfFrames", "1.2.3.4")  # an unknown class still says so


def test_a_built_seg_answers_highdicom_queries(series_volume):
    """Its query tables are built on first use: get_volume gives back each segment's mask."""
    volume = series_volume(orientation="oblique", reverse=True, shuffle=True)
    result = make_result(volume, overlapping=True)
    seg = build_segmentation(
        volume, result, seg_sr_options(), series_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        tracking_uids=[f"1.2.826.0.1.3680043.8.498.3.{s.number}" for s in result.segments],
    )
    assert "_db_con" not in seg.__dict__  # nothing built while writing
    frames = seg.get_volume(combine_segments=False).array  # planes sorted along the volume's normal
    assert seg.__dict__.get("_db_con") is not None
    masks = sorted(result.segments, key=lambda s: s.number)
    for index, segment in enumerate(masks):
        expected = segment.mask.sum()
        assert int(frames[..., index].sum()) == int(expected) > 0
        assert np.array_equal(np.sort(frames[..., index].sum(axis=(1, 2))), np.sort(segment.mask.sum(axis=(1, 2))))
