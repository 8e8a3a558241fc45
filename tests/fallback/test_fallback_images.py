"""Secondary Capture fallback: key slices with outlines and a legend, labelled derived, valid, deterministic."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.settings import ResultOptions
from pipelines.results.colours import segment_colour
from pipelines.results.fallback import NOT_FOR_DIAGNOSIS, build_fallback, key_slices
from pipelines.types import Code, PipelineResult, Segment
from pipelines.volume import load_datasets
from tests.viewer.phantom import DECOY, TARGET, make_ct

TISSUE = Code("85756007", "SCT", "Tissue")
AI = Code("123110", "DCM", "Artificial Intelligence")


def _result(volume, second_segment: bool = True) -> PipelineResult:  # type: ignore[no-untyped-def]
    target = volume.array >= 300
    target[:, DECOY[0], DECOY[1]] = False
    segments = [Segment(1, "target", TISSUE, TISSUE, target)]
    if second_segment:
        decoy = np.zeros_like(target)
        decoy[2:5, DECOY[0], DECOY[1]] = True
        segments.append(Segment(2, "decoy", TISSUE, TISSUE, decoy))
    return PipelineResult("test-pipeline", "1.0", AI, segments=segments)


@pytest.fixture(scope="module")
def volume():  # type: ignore[no-untyped-def]
    return load_datasets(make_ct().datasets)


def test_key_slices_are_each_segments_largest_cross_section(volume) -> None:  # type: ignore[no-untyped-def]
    result = _result(volume)
    keys = key_slices(result.segments, max_slices=6)
    assert len(keys) == 2
    target_key = next(k for k in keys if 1 in k.segment_numbers)
    assert volume.array[target_key.index][TARGET].min() >= 300, "target key slice does not show the target"
    assert all(k.segment_numbers for k in keys)
    # With room for one slice only, the largest segment (the target) keeps its key slice.
    assert [k.segment_numbers for k in key_slices(result.segments, max_slices=1)] == [(1,)]


def test_fallback_images_are_labelled_derived_and_reference_their_source(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    images = build_fallback(volume, _result(volume), ResultOptions(), job_key="series-x/test-pipeline")
    assert len(images) == 2
    source_uids = {str(ds.SOPInstanceUID) for ds in volume.datasets}
    for image in images:
        assert image.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert list(image.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert image.BurnedInAnnotation == "YES"
        assert "NOT FOR DIAGNOSIS" in image.SeriesDescription
        assert "Not for primary diagnosis" in image.ImageComments
        assert image.StudyInstanceUID == volume.datasets[0].StudyInstanceUID
        assert image.SeriesInstanceUID != volume.datasets[0].SeriesInstanceUID
        assert str(image.SourceImageSequence[0].ReferencedSOPInstanceUID) in source_uids
        path = tmp_path / f"{image.SOPInstanceUID}.dcm"
        image.save_as(path, enforce_file_format=True)
        again = pydicom.dcmread(path)
        assert again.pixel_array.shape[2] == 3
    assert NOT_FOR_DIAGNOSIS.startswith("DERIVED")


def test_outline_is_drawn_around_the_segment_in_its_colour(volume) -> None:  # type: ignore[no-untyped-def]
    image = build_fallback(volume, _result(volume, second_segment=False), ResultOptions(), job_key="k")[0]
    pixels = image.pixel_array
    scale = pixels.shape[1] // volume.array.shape[2]
    colour = np.all(pixels == segment_colour(1), axis=2)
    rows, columns = np.nonzero(colour[: volume.array.shape[1] * scale])
    assert rows.size > 0, "no outline pixels"
    # The outline hugs the target square (scaled), not the decoy on the opposite corner.
    assert TARGET[0].start * scale <= rows.min() and rows.max() < TARGET[0].stop * scale
    assert TARGET[1].start * scale <= columns.min() and columns.max() < TARGET[1].stop * scale
    inside = colour[(TARGET[0].start + 4) * scale : (TARGET[0].stop - 4) * scale,
                    (TARGET[1].start + 4) * scale : (TARGET[1].stop - 4) * scale]
    assert not inside.any(), "the segment is filled, not outlined"
    legend = colour[volume.array.shape[1] * scale :]
    assert legend.any(), "no legend swatch in the segment's colour"


def test_same_job_key_gives_same_uids_and_empty_result_gives_nothing(volume) -> None:  # type: ignore[no-untyped-def]
    first = build_fallback(volume, _result(volume), ResultOptions(), job_key="same")
    second = build_fallback(volume, _result(volume), ResultOptions(), job_key="same")
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]
    assert first[0].SeriesInstanceUID == second[0].SeriesInstanceUID
    empty = _result(volume, second_segment=False)
    empty.segments[0].mask = np.zeros_like(empty.segments[0].mask)
    assert build_fallback(volume, empty, ResultOptions(), job_key="same") == []


def test_mask_of_the_wrong_shape_is_refused(volume) -> None:  # type: ignore[no-untyped-def]
    bad = PipelineResult("p", "1", AI, segments=[Segment(1, "x", TISSUE, TISSUE, np.ones((2, 2, 2), bool))])
    with pytest.raises(ValueError, match="mask shape"):
        build_fallback(volume, bad, ResultOptions(), job_key="k")


def test_fallback_passes_dciodvfy(volume, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dciodvfy = shutil.which("dciodvfy") or str(Path(__file__).resolve().parents[2] / ".venv/bin/dciodvfy")
    image = build_fallback(volume, _result(volume), ResultOptions(), job_key="k")[0]
    path = tmp_path / "sc.dcm"
    image.save_as(path, enforce_file_format=True)
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_oblique_and_flipped_series_get_a_fallback(tmp_path: Path) -> None:
    oblique = load_datasets(make_ct(orientation=(0.866025, 0.5, 0.0, -0.482963, 0.836516, 0.258819)).datasets)
    flipped = load_datasets(make_ct(orientation=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0), reverse_order=True).datasets)
    assert build_fallback(oblique, _result(oblique), ResultOptions(), job_key="o")[0].PatientOrientation == ["L", "P"]
    assert build_fallback(flipped, _result(flipped), ResultOptions(), job_key="f")[0].PatientOrientation == ["L", "A"]
