"""The built-in pipelines' real output on the sample phantom becomes a valid SEG and SR that read back exactly."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from pipelines.registry import create_pipeline
from pipelines.results import write_results
from pipelines.volume import load_series
from tests.support.results import dciodvfy_errors, seg_sr_options
from tests.results.test_dcmqi import mask_on_source_grid, segimage2itkimage

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom" / "chest_ct"


@pytest.fixture(scope="module")
def sample_volume():
    return load_series(sorted(SAMPLE.glob("*.dcm")))


@pytest.mark.parametrize("name", ["ct-tissue", "ct-lungs", "ct-lung-cysts"])
def test_builtin_pipeline_results_are_valid_and_exact(sample_volume, tmp_path, name):
    result = create_pipeline(name).run(sample_volume)
    assert result.segments, f"{name} found nothing on the sample phantom"
    seg_file, sr_file = write_results(sample_volume, result, seg_sr_options(), f"sample/{name}", tmp_path / "out")

    assert dciodvfy_errors(seg_file.path) == []
    assert dciodvfy_errors(sr_file.path) == []

    seg = hd.seg.segread(seg_file.path)
    numbers = [s.number for s in result.segments]
    pixels = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in sample_volume.datasets], segment_numbers=numbers
    )
    segimage2itkimage(seg_file.path, tmp_path / "nrrd")
    for index, segment in enumerate(result.segments):
        assert np.array_equal(pixels[..., index].astype(bool), segment.mask), segment.label
        on_grid = mask_on_source_grid(tmp_path / "nrrd" / f"{segment.number}.nrrd", sample_volume)
        assert np.array_equal(on_grid, segment.mask), segment.label

    report = hd.sr.srread(sr_file.path).content
    written = {
        (group.referenced_segment[0].referenced_segment_numbers[0], m.name.value): float(m.value)
        for group in report.get_volumetric_roi_measurement_groups()
        for m in group.get_measurements()
    }
    expected = {(m.segment_number, m.name.value): m.value for m in result.measurements if m.segment_number}
    assert written == pytest.approx(expected, rel=1e-6)
    findings = [
        (e.name.value, e.value.value)
        for group in report.get_image_measurement_groups()
        for e in group.get_qualitative_evaluations()
    ]
    assert findings == [(c.concept.value, c.value.value) for c in result.classifications]
