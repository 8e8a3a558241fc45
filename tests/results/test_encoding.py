"""The quick SEG writer gives the very bytes pydicom's save_as gives, for every SEG form and source kind."""

from __future__ import annotations

import io

import pytest

from pipelines.results import encoding
from pipelines.results.seg import build_segmentation
from pipelines.results.sr import build_report
from pipelines.volume import load_series
from tests.support.results import make_result, seg_sr_options, write_enhanced_ct

FORMS = {
    "binary, overlapping": ({}, True),
    "binary, empty frames omitted": ({"omit_empty_frames": True}, False),
    "labelmap": ({"seg_type": "labelmap"}, False),
    "binary, JPEG 2000": ({"compress": True}, True),
    "labelmap, RLE": ({"seg_type": "labelmap", "compress": True}, False),
}


def _seg(volume, values, overlapping):  # type: ignore[no-untyped-def]
    result = make_result(volume, overlapping=overlapping)
    return build_segmentation(
        volume, result, seg_sr_options(**values), series_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        tracking_uids=[f"1.2.826.0.1.3680043.8.498.3.{s.number}" for s in result.segments],
    )


def _both(dataset) -> tuple[bytes, bytes]:  # type: ignore[no-untyped-def]
    plain, quick = io.BytesIO(), io.BytesIO()
    dataset.save_as(plain, enforce_file_format=True)
    encoding.save(dataset, quick)
    return plain.getvalue(), quick.getvalue()


@pytest.mark.parametrize("form", list(FORMS))
def test_seg_bytes_match_save_as(series_volume, form):
    values, overlapping = FORMS[form]
    seg = _seg(series_volume(orientation="oblique", shuffle=True), values, overlapping)

    assert encoding._per_frame_element(seg) is not None, "the quick path was not taken"
    plain, quick = _both(seg)
    assert quick == plain


def test_seg_of_an_enhanced_source_matches_save_as(tmp_path):
    volume = load_series([write_enhanced_ct(tmp_path / "source", reverse=True)])
    seg = _seg(volume, {}, True)

    plain, quick = _both(seg)
    assert encoding._per_frame_element(seg) is not None and quick == plain


def test_objects_without_per_frame_groups_are_written_by_save_as(series_volume):
    volume = series_volume()
    result = make_result(volume)
    seg = _seg(volume, {}, False)
    report = build_report(
        volume, result, seg_sr_options(), series_uid="1.2.826.0.1.3680043.8.498.4",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.5", segment_tracking_uids=["1.2.3.1", "1.2.3.2"],
        group_tracking_uids=["1.2.3.10", "1.2.3.11"], seg=seg,
    )

    assert encoding._per_frame_element(report) is None
    plain, quick = _both(report)
    assert quick == plain
