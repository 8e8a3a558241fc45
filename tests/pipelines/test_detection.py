"""A detection bundle in the lung nodule layout: its own inferer and box postprocessing, boxes on the volume."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.bundle import BundlePipeline
from pipelines.settings import PipelineSettings
from pipelines.types import Code
from pipelines.volume import load_datasets
from sample_dicom import generate
from tests.pipelines import zoo_scripts

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


def centre_and_size(box, volume):
    low, high = (np.array(corner) for corner in box.patient_box(volume))
    return (low + high) / 2, high - low


@pytest.mark.parametrize("in_world", [True, False], ids=["world-coordinates", "image-coordinates"])
def test_the_best_box_is_on_the_nodule_in_patient_coordinates(tmp_path, nodule_volume, in_world):
    overrides = {} if in_world else {"postprocessing#transforms#1": None}  # no AffineBoxToWorldCoordinated
    bundle = BundlePipeline(PipelineSettings(name="nodules", bundle_dir=zoo_scripts.lung_nodule(tmp_path / "lung"),
                                             task="detection", labels=NODULE, overrides=overrides))
    result = bundle.run(nodule_volume)
    assert result.detections and all(0.02 <= box.score <= 1.0 for box in result.detections)
    best = result.detections[0]
    centre, size = centre_and_size(best, nodule_volume)
    assert np.all(np.abs(centre - NODULE_CENTRE) <= 5.0)  # within the network's feature stride (2 voxels)
    low, high = best.patient_box(nodule_volume)
    assert np.all(np.array(low) <= NODULE_CENTRE) and np.all(NODULE_CENTRE <= np.array(high))
    assert np.allclose(size, [20.0, 20.0, 10.0]) and best.label == 0  # the anchor: no box regression
    assert result.classes[0][2] == Code("27925004", "SCT", "Nodule")
