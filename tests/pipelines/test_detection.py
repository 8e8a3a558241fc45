"""A detection bundle in the lung nodule layout: its own inferer and box postprocessing, located findings."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from pipelines.bundle import BundlePipeline
from pipelines.results import write_results
from pipelines.settings import PipelineSettings, ResultOptions
from pipelines.types import Code
from pipelines.volume import load_datasets
from sample_dicom import generate
from tests.pipelines import zoo_scripts
from tests.support.results import dciodvfy_errors

NODULE_CENTRE = np.array([25.0, -10.0, 40.0])
NODULE = {0: {"label": "Lung nodule", "category": ["49755003", "SCT", "Morphologically Altered Structure"],
              "type": ["27925004", "SCT", "Nodule"]}}


@pytest.fixture(scope="module")
def nodule_volume():
    """A 64x64x32 CT of lung parenchyma (-860 HU) with one 6 mm solid nodule."""
    grid = generate.Grid(shape=(32, 64, 64), pixel_spacing=2.5, slice_spacing=2.5, center=(10.0, -20.0, 30.0))
    j, i = np.mgrid[0:64, 0:64]
    datasets = []
    for k in range(32):
        points = grid.affine @ np.stack([i.ravel(), j.ravel(), np.full(i.size, k), np.ones(i.size)])
        distance = np.linalg.norm(points[:3].T - NODULE_CENTRE, axis=1).reshape(64, 64)
        datasets.append(generate.ct_dataset(np.where(distance <= 6.0, 40.0, -860.0), grid, k, series="nodule"))
    return load_datasets(datasets)


@pytest.mark.parametrize("in_world", [True, False], ids=["world-coordinates", "image-coordinates"])
def test_the_best_box_is_on_the_nodule_in_patient_coordinates(tmp_path, nodule_volume, in_world):
    overrides = {} if in_world else {"postprocessing#transforms#1": None}  # no AffineBoxToWorldCoordinated
    bundle = BundlePipeline(PipelineSettings(name="nodules", bundle_dir=zoo_scripts.lung_nodule(tmp_path / "lung"),
                                             task="detection", labels=NODULE, overrides=overrides))
    result = bundle.run(nodule_volume)
    assert result.findings and all(0.02 <= finding.probability <= 1.0 for finding in result.findings)
    best = result.findings[0]
    assert best.finding_type == Code("27925004", "SCT", "Nodule") and best.label == "Lung nodule"
    low, high = (np.array(corner) for corner in best.box)
    assert np.all(np.abs((low + high) / 2 - NODULE_CENTRE) <= 5.0)  # within the network's feature stride
    assert np.all(low <= NODULE_CENTRE) and np.all(NODULE_CENTRE <= high)
    assert np.allclose(high - low, [20.0, 20.0, 10.0])  # the anchor: no box regression


def test_detections_become_located_findings_in_a_valid_sr(tmp_path, nodule_volume):
    bundle = BundlePipeline(PipelineSettings(name="nodules", bundle_dir=zoo_scripts.lung_nodule(tmp_path / "lung"),
                                             task="detection", labels=NODULE))
    result = bundle.run(nodule_volume)
    written = write_results(nodule_volume, result, ResultOptions(fallback_key_slices=0), "job-nodules", tmp_path / "out")
    [sr] = [item.path for item in written if item.kind == "sr"]
    assert dciodvfy_errors(sr) == []
    assert "Lung nodule" in str(pydicom.dcmread(sr).ContentSequence)
