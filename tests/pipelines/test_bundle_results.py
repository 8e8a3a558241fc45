"""A bundle's result, labelled from its metadata alone, written as SEG and SR that validate."""

from __future__ import annotations

import highdicom as hd
import numpy as np

from pipelines.bundle import BundlePipeline
from pipelines.results import write_results
from pipelines.settings import PipelineSettings, ResultOptions
from pipelines.volume import load_datasets
from sample_dicom import generate
from tests.pipelines import zoo
from tests.support.sample import phantom_series
from tests.support.results import dciodvfy_errors

GRID = generate.Grid(shape=(24, 64, 64), pixel_spacing=5.0, slice_spacing=10.0)


def test_segments_coded_from_the_bundle_make_a_valid_seg_with_laterality(tmp_path):
    volume = load_datasets(phantom_series(GRID, "coded")[0])
    bundle_dir = zoo.wholebody(tmp_path / "wholeBody_ct_segmentation")
    result = BundlePipeline(PipelineSettings(name="wholebody", bundle_dir=bundle_dir)).run(volume)
    written = write_results(volume, result, ResultOptions(), "job-coded", tmp_path / "out")
    paths = {item.kind: item.path for item in written}
    assert dciodvfy_errors(paths["seg"]) == [] and dciodvfy_errors(paths["sr"]) == []

    seg = hd.seg.segread(paths["seg"])
    described = {item.SegmentLabel: item for item in seg.SegmentSequence}
    right = described["Kidney right"].SegmentedPropertyTypeCodeSequence[0]
    assert (right.CodeValue, right.CodeMeaning) == ("64033007", "Kidney")
    assert right.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "24028007"
    assert "SegmentedPropertyTypeModifierCodeSequence" not in described["Spleen"].SegmentedPropertyTypeCodeSequence[0]
    numbers = [item.SegmentNumber for item in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in volume.datasets], segment_numbers=numbers)
    for segment, mask in zip(result.segments, np.moveaxis(pixels, -1, 0)):
        assert np.array_equal(mask.astype(bool), segment.mask)
