"""A SEG of an enhanced multi-frame CT references and matches the source frames, whatever their order."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from pipelines.results import write_results
from pipelines.volume import load_series
from tests.support.results import dciodvfy_errors, make_result, seg_sr_options, write_enhanced_ct
from tests.results.test_dcmqi import mask_on_source_grid, segimage2itkimage


@pytest.mark.parametrize("seg_type", ["binary", "labelmap"])
def test_seg_of_an_enhanced_ct_matches_its_frames(tmp_path, seg_type):
    volume = load_series([write_enhanced_ct(tmp_path / "source", orientation="oblique", reverse=True)])
    assert volume.frame_numbers is not None and volume.frame_numbers != sorted(volume.frame_numbers)
    result = make_result(volume)
    seg_file, sr_file = write_results(volume, result, seg_sr_options(seg_type=seg_type), "job-mf", tmp_path / "out")

    assert dciodvfy_errors(seg_file.path) == []
    seg = hd.seg.segread(seg_file.path)
    pixels = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=volume.datasets[0].SOPInstanceUID,
        source_frame_numbers=volume.frame_numbers,
        segment_numbers=[1, 2],
        assert_missing_frames_are_empty=True,
    )
    for index, segment in enumerate(result.segments):
        assert np.array_equal(pixels[..., index].astype(bool), segment.mask), segment.label
    if seg_type == "binary":
        assert dciodvfy_errors(sr_file.path) == []


def test_dcmqi_places_an_enhanced_ct_seg_on_the_source_grid(tmp_path):
    volume = load_series([write_enhanced_ct(tmp_path / "source", orientation="oblique", shuffle=True)])
    result = make_result(volume, overlapping=True)
    seg_file = write_results(volume, result, seg_sr_options(), "job-mf", tmp_path / "out")[0]

    segimage2itkimage(seg_file.path, tmp_path / "nrrd")
    for segment in result.segments:
        assert np.array_equal(mask_on_source_grid(tmp_path / "nrrd" / f"{segment.number}.nrrd", volume), segment.mask)
