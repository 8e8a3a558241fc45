"""SEG writing: valid DICOM (dciodvfy), reads back to the same masks, in every option and geometry."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from pipelines.settings import ResultOptions
from pipelines.results import write_results
from pipelines.types import Segment, Volume
from tests.support.results import SLICES, dciodvfy_errors, make_result, seg_sr_options

BINARY_SEG = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"


def write_seg(volume: Volume, result, options: ResultOptions, out: Path) -> Path:
    written = write_results(volume, result, options, "job-seg", out)
    assert [w.kind for w in written if not w.kind.startswith("fallback")] == ["seg", "sr"]
    return written[0].path


def read_masks(path: Path, volume: Volume, numbers: list[int]) -> np.ndarray:
    """Masks read back per source instance, in the volume's slice order: shape (segments, k, j, i)."""
    seg = hd.seg.segread(path)
    uids = [ds.SOPInstanceUID for ds in volume.datasets]
    pixels = seg.get_pixels_by_source_instance(
        uids, segment_numbers=numbers, assert_missing_frames_are_empty=True
    )
    return np.moveaxis(pixels, -1, 0).astype(bool)


def assert_same_masks(path: Path, volume: Volume, segments: list[Segment]) -> None:
    masks = read_masks(path, volume, [s.number for s in segments])
    for segment, mask in zip(segments, masks):
        assert np.array_equal(mask, segment.mask), f"segment {segment.number} ({segment.label}) differs"


@pytest.mark.parametrize(
    "geometry",
    [
        {"orientation": "axial"},
        {"orientation": "oblique"},
        {"orientation": "axial", "reverse": True},
        {"orientation": "oblique", "reverse": True, "shuffle": True},
    ],
    ids=["axial", "oblique", "flipped", "oblique-flipped-out-of-order"],
)
def test_binary_seg_is_valid_and_reads_back_in_every_geometry(series_volume, options, tmp_path, geometry):
    volume = series_volume(**geometry)
    result = make_result(volume)
    path = write_seg(volume, result, options, tmp_path / "out")

    assert dciodvfy_errors(path) == []
    assert_same_masks(path, volume, result.segments)
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == BINARY_SEG
    assert int(seg.NumberOfFrames) == SLICES * len(result.segments)  # empty frames kept by default


def test_seg_is_a_new_series_in_the_source_study_with_its_identification(series_volume, tmp_path):
    volume = series_volume()
    options = seg_sr_options(series_number=8001, series_description_prefix="AI", content_creator="Node^AI")
    path = write_seg(volume, make_result(volume), options, tmp_path / "out")
    seg = hd.seg.segread(path)
    source = volume.datasets[0]

    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert (seg.SeriesNumber, seg.SeriesDescription) == (8001, "AI test-shapes SEG")
    assert str(seg.ContentCreatorName) == "Node^AI"
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in volume.datasets}
    description = seg.SegmentSequence[1]
    assert (description.SegmentLabel, description.TrackingID) == ("Box", "box-1")
    assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == "272673000"
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("test-shapes", "1.2.3")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def test_binary_seg_can_omit_empty_frames(series_volume, tmp_path):
    volume = series_volume(orientation="oblique", reverse=True)
    result = make_result(volume)
    path = write_seg(volume, result, seg_sr_options(omit_empty_frames=True), tmp_path / "out")

    assert dciodvfy_errors(path) == []
    non_empty = sum(int(s.mask[k].any()) for s in result.segments for k in range(SLICES))
    assert int(hd.seg.segread(path).NumberOfFrames) == non_empty < SLICES * len(result.segments)
    assert_same_masks(path, volume, result.segments)


def test_overlapping_segments_stay_whole_in_a_binary_seg(series_volume, options, tmp_path):
    volume = series_volume()
    result = make_result(volume, overlapping=True)
    path = write_seg(volume, result, options, tmp_path / "out")

    assert dciodvfy_errors(path) == []
    assert hd.seg.segread(path).SegmentsOverlap == "YES"
    assert_same_masks(path, volume, result.segments)


def test_labelmap_seg_is_valid_and_reads_back(series_volume, tmp_path):
    volume = series_volume(orientation="oblique", shuffle=True)
    result = make_result(volume)
    path = write_seg(volume, result, seg_sr_options(seg_type="labelmap"), tmp_path / "out")

    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == LABELMAP_SEG and int(seg.NumberOfFrames) == SLICES
    assert_same_masks(path, volume, result.segments)


def test_labelmap_of_overlapping_segments_keeps_the_highest_number(series_volume, tmp_path, caplog):
    volume = series_volume()
    result = make_result(volume, overlapping=True)
    path = write_seg(volume, result, seg_sr_options(seg_type="labelmap"), tmp_path / "out")

    assert "overlap" in caplog.text
    sphere, box, body = read_masks(path, volume, [1, 2, 3])
    whole_sphere, whole_box, whole_body = (s.mask for s in result.segments)
    assert not sphere.any()  # wholly inside the body, painted over by it
    assert np.array_equal(box, whole_box & ~whole_body) and box.any()
    assert np.array_equal(body, whole_body)


@pytest.mark.parametrize(
    ("seg_type", "syntax"), [("binary", JPEG2000Lossless), ("labelmap", RLELossless)], ids=["binary", "labelmap"]
)
def test_compressed_seg_is_lossless(series_volume, tmp_path, seg_type, syntax):
    volume = series_volume(orientation="oblique")
    result = make_result(volume)
    path = write_seg(volume, result, seg_sr_options(seg_type=seg_type, compress=True), tmp_path / "out")

    assert dciodvfy_errors(path) == []
    assert hd.seg.segread(path).file_meta.TransferSyntaxUID == syntax
    assert_same_masks(path, volume, result.segments)


def test_mask_of_the_wrong_shape_is_refused(series_volume, options, tmp_path):
    volume = series_volume()
    result = make_result(volume)
    result.segments[0].mask = result.segments[0].mask[:-1]
    with pytest.raises(ValueError, match="mask shape"):
        write_results(volume, result, options, "job-bad", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_segment_numbers_with_gaps_are_refused(series_volume, options, tmp_path):
    volume = series_volume()
    result = make_result(volume)
    result.segments[1].number = 5
    with pytest.raises(ValueError, match="segment numbers must be 1..2"):
        write_results(volume, result, options, "job-bad", tmp_path)


@pytest.mark.parametrize("omit_empty_frames", [False, True], ids=["kept", "omitted"])
def test_an_empty_segment_is_described_and_reads_back_empty(series_volume, tmp_path, omit_empty_frames):
    volume = series_volume()
    result = make_result(volume)
    result.segments[1].mask = np.zeros_like(result.segments[1].mask)
    path = write_seg(volume, result, seg_sr_options(omit_empty_frames=omit_empty_frames), tmp_path / "out")

    assert dciodvfy_errors(path) == []
    assert len(hd.seg.segread(path).SegmentSequence) == 2
    assert_same_masks(path, volume, result.segments)
