"""Reading reference SEGs onto the series' grid: through the frames' source references, or by geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.evaluation.reference import ReferenceError, read_reference_seg
from pipelines.volume import load_series
from tests.quality.references import sample_files, shifted, truth_lungs, write_reference_seg


@pytest.fixture(scope="module")
def volume():  # type: ignore[no-untyped-def]
    return load_series(sample_files())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    truth = truth_lungs()
    masks = {"Right lung": shifted(truth["Right lung"], 1, axis=0), "Left lung": truth["Left lung"]}
    path = tmp_path_factory.mktemp("seg") / "reference.dcm"
    write_reference_seg(masks, path)
    return path, masks


def test_frames_are_placed_through_their_source_images(volume, reference) -> None:  # type: ignore[no-untyped-def]
    path, masks = reference
    segments = read_reference_seg(path, volume)
    assert [(s.number, s.label, s.type.value) for s in segments] == [(1, "Right lung", "3341006"), (2, "Left lung", "44029006")]
    for segment in segments:
        assert np.array_equal(segment.mask, masks[segment.label])


def test_a_seg_without_source_references_is_placed_by_its_geometry(volume, reference) -> None:  # type: ignore[no-untyped-def]
    path, masks = reference
    seg = pydicom.dcmread(path)
    del seg.ReferencedSeriesSequence
    for frame in seg.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence
    segments = read_reference_seg(seg, volume)
    for segment in segments:
        assert np.array_equal(segment.mask, masks[segment.label])


def test_a_seg_of_another_frame_of_reference_is_refused(volume, reference) -> None:  # type: ignore[no-untyped-def]
    path, _ = reference
    seg = pydicom.dcmread(path)
    seg.FrameOfReferenceUID = pydicom.uid.generate_uid()
    with pytest.raises(ReferenceError, match="another frame of reference"):
        read_reference_seg(seg, volume)


def test_a_file_that_is_no_seg_is_refused_with_the_reason(volume) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReferenceError, match="not a readable DICOM SEG"):
        read_reference_seg(sample_files()[0], volume)
