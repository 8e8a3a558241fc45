"""MONAI bundles as pipelines: loading, geometry, the bundle's own inferer, classification and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from node.config import Settings
from pipelines import codes
from pipelines.bundle import BundleError, BundlePipeline
from pipelines.registry import available, create_pipeline
from pipelines.settings import PipelineSettings
from pipelines.types import Code, PipelineFailure
from pipelines.volume import load_datasets
from sample_dicom import generate
from tests.pipelines import zoo, zoo_networks
from tests.support.sample import dice, phantom_series

GRID = generate.Grid(shape=(24, 64, 64), pixel_spacing=5.0, slice_spacing=10.0)


def settings_for(bundle_dir, **extra) -> PipelineSettings:
    return PipelineSettings(name="dense", bundle_dir=bundle_dir, **extra)


@pytest.fixture(scope="module")
def phantom():
    datasets, labels = phantom_series(GRID, "bundle")
    return load_datasets(datasets), labels


def dense_truth(labels: np.ndarray) -> np.ndarray:
    return np.isin(labels, (generate.SOFT_TISSUE, generate.FAT, generate.BONE, generate.TABLE))


def test_torchscript_yaml_bundle_matches_the_threshold_exactly(tmp_path, phantom):
    volume, _ = phantom
    bundle_dir = zoo.pointwise(tmp_path / "b", torchscript=True, fmt="yaml", roi_size=[32, 32, 16])
    result = BundlePipeline(settings_for(bundle_dir)).run(volume)
    [segment] = result.segments
    assert segment.mask.shape == volume.array.shape and segment.mask.dtype == bool
    expected = volume.array > zoo.SEGMENT_THRESHOLD_HU
    assert np.mean(segment.mask != expected) < 1e-4
    assert result.version == "0.5.9" and result.algorithm_family == codes.ARTIFICIAL_INTELLIGENCE
    assert segment.label == "Soft tissue" and segment.type == Code("87784001", "SCT", "Soft tissue")
    volume_ml = next(m.value for m in result.measurements if m.name == codes.VOLUME)
    assert volume_ml == pytest.approx(expected.sum() * volume.voxel_volume_ml)


def test_resampling_bundle_is_inverted_onto_the_source_grid(tmp_path, phantom):
    volume, labels = phantom
    bundle_dir = zoo.pointwise(tmp_path / "b", pixdim=[7.5, 7.5, 15.0], roi_size=[24, 24, 8])
    result = BundlePipeline(settings_for(bundle_dir)).run(volume)
    assert dice(result.segments[0].mask, dense_truth(labels)) >= 0.93
    assert set(result.timings) == {"preprocessing", "inference", "postprocessing", "results"}


def test_oblique_flipped_volume_keeps_its_geometry(tmp_path):
    angle = np.radians(20)
    grid = generate.Grid(shape=(20, 64, 64), pixel_spacing=5.0, slice_spacing=10.0,
                         orientation=(np.cos(angle), np.sin(angle), 0.0, np.sin(angle), -np.cos(angle), 0.0))
    datasets, labels = phantom_series(grid, "bundle-oblique")
    volume = load_datasets(datasets)
    bundle_dir = zoo.pointwise(tmp_path / "b", pixdim=[6.0, 6.0, 12.0])
    result = BundlePipeline(settings_for(bundle_dir)).run(volume)
    assert dice(result.segments[0].mask, dense_truth(labels)) >= 0.9


def test_the_bundle_inferer_runs_with_its_own_settings_unless_the_pipeline_sets_them(tmp_path):
    bundle_dir = zoo.pointwise(tmp_path / "b", roi_size=[32, 32, 16])
    own = BundlePipeline(settings_for(bundle_dir)).inferer
    assert list(own.roi_size) == [32, 32, 16] and own.sw_batch_size == 4 and own.overlap == 0.5
    chosen = BundlePipeline(settings_for(bundle_dir, roi_size=[16, 16, 8], sw_batch_size=2)).inferer
    assert list(chosen.roi_size) == [16, 16, 8] and chosen.sw_batch_size == 2 and chosen.overlap == 0.5


def test_classification_bundle_gives_the_known_probability(tmp_path, phantom):
    volume, _ = phantom
    bundle_dir = zoo_networks.classifier(tmp_path / "c", weight=4.0, bias=1.0)
    entry = PipelineSettings(
        name="dense-class", bundle_dir=bundle_dir, task="classification",
        labels={0: {"concept": ["87433001", "SCT", "Pulmonary emphysema"], "value": ["52101004", "SCT", "Present"]},
                1: {"concept": ["87433001", "SCT", "Pulmonary emphysema"], "value": ["272519000", "SCT", "Absent"]}},
    )
    result = BundlePipeline(entry).run(volume)
    mean = float(np.clip(volume.array / 1000.0, -1, 1).mean())
    logit = 4.0 * mean + 1.0
    p0 = float(np.exp(logit) / (np.exp(logit) + np.exp(-logit)))
    [classification] = result.classifications
    expected_index = 0 if p0 >= 0.5 else 1
    assert classification.value.value == ("52101004" if expected_index == 0 else "272519000")
    assert classification.probability == pytest.approx(max(p0, 1 - p0), abs=1e-4)


def test_registry_creates_bundle_pipelines_from_the_configuration(tmp_path, phantom):
    bundle_dir = zoo.pointwise(tmp_path / "b")
    settings = Settings(pipelines=[settings_for(bundle_dir).model_dump()])
    assert "dense" in available(settings.pipelines)
    pipeline = create_pipeline("dense", settings.pipelines)
    assert pipeline.accepts(phantom[0].datasets[0]) is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: (d / "configs" / "metadata.json").unlink(), "metadata.json is missing"),
        (lambda d: (d / "models" / "model.pt").unlink(), r"inference.json, key 'checkpointloader#load_path'.*model.pt does not exist"),
        (lambda d: (d / "configs" / "inference.json").unlink(), "no configs/inference.json"),
    ],
)
def test_broken_bundles_are_refused_with_the_reason(tmp_path, mutate, message):
    bundle_dir = zoo.pointwise(tmp_path / "b")
    mutate(bundle_dir)
    with pytest.raises(BundleError, match=message) as raised:
        BundlePipeline(settings_for(bundle_dir))
    assert isinstance(raised.value, PipelineFailure)  # the node fails such a job for good


def test_labels_without_codes_are_refused(tmp_path):
    bundle_dir = zoo.pointwise(tmp_path / "b")
    entry = PipelineSettings(name="x", bundle_dir=bundle_dir, labels={1: {"label": "Spleen", "category": ["1", "SCT"], "type": []}})
    with pytest.raises(BundleError, match="value, scheme and meaning"):
        BundlePipeline(entry)
