"""Four MR series of one study as the four input channels of one model, and the SEG that references them all."""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pytest

from pipelines.bundle import BundlePipeline
from pipelines.multiseries import resample_onto, stack_series
from pipelines.results import write_results
from pipelines.settings import PipelineSettings, ResultOptions
from pipelines.types import UnsupportedSeries
from pipelines.volume import load_datasets
from tests.pipelines import zoo_networks
from tests.support.results import dciodvfy_errors
from tests.support.mr_study import SEQUENCES, Geometry, mr_study

FLAIR_GRID = Geometry(shape=(14, 30, 40), spacing=(2.6, 3.1, 5.0))
"""FLAIR on its own coarser grid: it is resampled onto the reference's."""


def volumes(study):
    return {name.lower(): load_datasets(copy.deepcopy(datasets)) for name, datasets in study.items()}


def test_a_series_on_another_grid_is_resampled_through_patient_coordinates():
    study = mr_study({"FLAIR": FLAIR_GRID})
    loaded = volumes(study)
    flair = resample_onto(loaded["flair"], loaded["t1"])
    assert flair.shape == loaded["t1"].array.shape
    k, j, i = np.argwhere(flair > 250).mean(axis=0)
    x, y, z = (loaded["t1"].affine @ [i, j, k, 1.0])[:3]
    assert np.allclose((x, y, z), (*SEQUENCES["FLAIR"][1], 0.0), atol=2.0)  # the blob stays where it was
    assert resample_onto(loaded["t2"], loaded["t1"]) is loaded["t2"].array  # same grid: no copy


def test_the_model_gets_the_series_in_its_order_and_the_seg_references_every_one(tmp_path):
    study = mr_study({"FLAIR": FLAIR_GRID})
    stacked = stack_series(volumes(study), reference="t1")
    bundle = BundlePipeline(PipelineSettings(name="brats", bundle_dir=zoo_networks.brats(tmp_path / "brats"),
                                             modalities=["MR"], labels=zoo_networks.BRATS_LABELS))
    result = bundle.run(stacked)
    centres = {}
    for segment in result.segments:
        k, j, i = (np.array([part.start + part.stop for part in segment.box]) - 1) / 2
        centres[segment.label] = tuple(np.round((stacked.affine @ [i, j, k, 1.0])[:2]))
    assert centres == {"Necrotic tumor core": SEQUENCES["T1c"][1], "Peritumoral edema": SEQUENCES["T1"][1],
                       "Enhancing tumor": SEQUENCES["T2"][1]}

    written = write_results(stacked, result, ResultOptions(fallback_key_slices=0), "job-mr", tmp_path / "out")
    seg_path = next(item.path for item in written if item.kind == "seg")
    assert dciodvfy_errors(seg_path) == []
    seg = hd.seg.segread(seg_path)
    referenced = {item.SeriesInstanceUID: len(item.ReferencedInstanceSequence) for item in seg.ReferencedSeriesSequence}
    assert referenced == {datasets[0].SeriesInstanceUID: len(datasets) for datasets in study.values()}


def test_series_of_another_frame_of_reference_are_refused():
    study = mr_study()
    for ds in study["T2"]:
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.99"
    with pytest.raises(UnsupportedSeries, match="'t2' has another frame of reference"):
        stack_series(volumes(study), reference="t1")
