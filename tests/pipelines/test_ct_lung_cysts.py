"""ct-lung-cysts finds the phantom's four air spaces, and nothing else, where the generator put them.

The phantom's emphysema spheres are analytic (centre and radius in patient mm); the generator's per-voxel
truth gives each sphere's voxels on the grid. Checked on the checked-in axial sample and on an oblique grid.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipelines import codes
from pipelines.registry import get_pipeline
from pipelines.types import PipelineResult, Volume
from pipelines.volume import load_datasets, load_series
from sample_dicom import generate
from tests.support.sample import dice

OBLIQUE = generate.Grid(
    shape=(40, 96, 96), pixel_spacing=3.6, slice_spacing=6.0,
    orientation=(0.866025, 0.5, 0.0, -0.482963, 0.836516, 0.258819),
)


def oblique_series() -> tuple[Volume, np.ndarray]:
    datasets, truth = [], []
    for k, (hu, _, emphysema) in enumerate(generate.slices(OBLIQUE)):
        datasets.append(generate.ct_dataset(hu, OBLIQUE, k, series="oblique-cysts"))
        truth.append(emphysema)
    return load_datasets(datasets), np.stack(truth)


def check_known_answers(volume: Volume, truth: np.ndarray, result: PipelineResult) -> None:
    """One finding per sphere: centre within half a pixel, region matching the sphere's voxels, box around
    them, volume measured from the region."""
    assert len(result.findings) == len(generate.EMPHYSEMA_SPHERES)
    labels, count = ndimage.label(truth)
    segments = {segment.number: segment for segment in result.segments}
    volumes = {m.segment_number: m.value for m in result.measurements if m.name == codes.VOLUME}
    tolerance = 0.5 * max(volume.spacing[:2])
    grid_step = float(np.linalg.norm(volume.spacing))
    for centre, _radius in generate.EMPHYSEMA_SPHERES:
        finding = min(result.findings, key=lambda f: np.linalg.norm(np.subtract(f.point, centre)))
        assert np.linalg.norm(np.subtract(finding.point, centre)) <= tolerance, f"{finding.label} at {finding.point}"
        assert finding.finding_type == codes.CYST and finding.probability is None
        segment = segments[finding.segment_number]
        k, j, i = np.round(volume.to_voxel(centre)).astype(int)[::-1]
        sphere = labels == labels[k, j, i]
        assert labels[k, j, i] and dice(segment.mask, sphere) >= 0.9
        low, high = (np.asarray(corner) for corner in finding.box)
        kk, jj, ii = np.nonzero(sphere)
        centres = (volume.affine @ np.stack([ii, jj, kk, np.ones_like(ii)]).astype(float))[:3].T
        assert np.all(centres >= low - grid_step) and np.all(centres <= high + grid_step), "box misses the sphere"
        assert volumes[segment.number] == pytest.approx(segment.voxel_count * volume.voxel_volume_ml)
        assert volumes[segment.number] == pytest.approx(sphere.sum() * volume.voxel_volume_ml, rel=0.1)
    assert count == len(generate.EMPHYSEMA_SPHERES)


def test_finds_the_four_air_spaces_of_the_sample(sample_paths, sample_truth) -> None:  # type: ignore[no-untyped-def]
    volume = load_series(sample_paths)
    check_known_answers(volume, sample_truth["emphysema"], get_pipeline("ct-lung-cysts").run(volume))


def test_finds_them_on_an_oblique_grid_and_leaves_out_the_bronchi_it_cuts_off() -> None:
    volume, truth = oblique_series()
    check_known_answers(volume, truth, get_pipeline("ct-lung-cysts").run(volume))
