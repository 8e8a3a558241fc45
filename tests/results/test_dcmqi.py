"""An independent reader (dcmqi's segimage2itkimage) places every segment exactly on the source grid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nrrd
import numpy as np
import pytest

from pipelines.results import write_results
from pipelines.types import Volume
from tests.support.results import make_result, seg_sr_options


def segimage2itkimage(seg_path: Path, out_dir: Path) -> None:
    bundled = Path(sys.executable).parent / "segimage2itkimage"
    tool = str(bundled) if bundled.exists() else shutil.which("segimage2itkimage")
    assert tool, "segimage2itkimage (PyPI dcmqi) is not installed"
    out_dir.mkdir()
    completed = subprocess.run(
        [tool, "--inputDICOM", str(seg_path), "--outputDirectory", str(out_dir), "--outputType", "nrrd"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def mask_on_source_grid(nrrd_path: Path, volume: Volume) -> np.ndarray:
    """The NRRD's non-zero voxels, mapped through patient space onto the volume's voxel grid."""
    data, header = nrrd.read(str(nrrd_path), index_order="C")  # data[k, j, i]
    assert header["space"] == "left-posterior-superior"
    to_world = np.eye(4)
    to_world[:3, :3] = np.asarray(header["space directions"], dtype=float).T
    to_world[:3, 3] = np.asarray(header["space origin"], dtype=float)
    k, j, i = np.nonzero(data)
    world = to_world @ np.stack([i, j, k, np.ones_like(i)]).astype(float)
    ijk = np.linalg.inv(volume.affine) @ world
    rounded = np.rint(ijk[:3]).astype(int)
    assert np.allclose(ijk[:3], rounded, atol=1e-3), "SEG voxels do not fall on source voxel centres"
    mask = np.zeros(volume.array.shape, dtype=bool)
    inside = np.all((rounded >= 0) & (rounded < np.array(volume.array.shape[::-1])[:, None]), axis=0)
    assert inside.all(), "SEG voxels outside the source volume"
    mask[rounded[2], rounded[1], rounded[0]] = True
    return mask


@pytest.mark.parametrize(
    ("geometry", "options"),
    [
        ({"orientation": "axial"}, seg_sr_options()),
        ({"orientation": "oblique", "reverse": True}, seg_sr_options()),
        ({"orientation": "oblique", "shuffle": True}, seg_sr_options(omit_empty_frames=True)),
        ({"orientation": "axial", "reverse": True, "shuffle": True}, seg_sr_options(omit_empty_frames=True)),
    ],
    ids=["axial", "oblique-flipped", "oblique-out-of-order-omitted", "flipped-out-of-order-omitted"],
)
def test_dcmqi_reads_each_segment_onto_the_source_grid(series_volume, tmp_path, geometry, options):
    volume = series_volume(**geometry)
    result = make_result(volume, overlapping=True)
    seg_path = write_results(volume, result, options, "job-dcmqi", tmp_path / "out")[0].path

    segimage2itkimage(seg_path, tmp_path / "nrrd")

    for segment in result.segments:
        mask = mask_on_source_grid(tmp_path / "nrrd" / f"{segment.number}.nrrd", volume)
        assert np.array_equal(mask, segment.mask), f"segment {segment.number} ({segment.label}) misplaced"
