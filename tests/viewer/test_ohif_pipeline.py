"""The sample chest CT through pacsnode: ct-lungs runs, the project's writers make SEG and SR, the node's C-STORE
SCU sends study and results to Orthanc, and OHIF shows the lung overlay where the lungs are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from node.config import ResultsConfig
from node.scu import send_objects
from pipelines.registry import create_pipeline
from pipelines.results import write_results
from pipelines.volume import load_series
from tests.support.ohif import OrthancWeb, ViewerPage, series_listed, world_to_screen

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(240)]

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom" / "chest_ct"


def coloured_pixels(rgb: np.ndarray, margin: int = 90) -> np.ndarray:
    """Saturated pixels (any segment colour) away from the viewport's edges, where OHIF writes its text and UI."""
    spread = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
    out = spread > 40
    out[:margin], out[-margin:], out[:, :margin], out[:, -margin:] = False, False, False, False
    return out


def expected_on_screen(viewer: ViewerPage, affine: np.ndarray, mask: np.ndarray, k: int, shape: tuple) -> np.ndarray:
    """The slice-``k`` mask drawn where OHIF puts those voxels on screen (OHIF's own image geometry)."""
    rows, columns = mask.shape
    corners = [(0, 0), (columns - 1, 0), (0, rows - 1)]
    world = [list((affine @ np.array([i, j, k, 1.0]))[:3]) for i, j in corners]
    (x0, y0), (x1, y1), (x2, y2) = world_to_screen(viewer, world)
    # screen (x, y) = origin + i * u + j * v; invert it for every screen pixel and sample the mask.
    u = np.array([x1 - x0, y1 - y0]) / (columns - 1)
    v = np.array([x2 - x0, y2 - y0]) / (rows - 1)
    inverse = np.linalg.inv(np.column_stack([u, v]))
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    offsets = np.stack([xs - x0, ys - y0], axis=-1) @ inverse.T
    i, j = np.rint(offsets[..., 0]).astype(int), np.rint(offsets[..., 1]).astype(int)
    inside = (i >= 0) & (i < columns) & (j >= 0) & (j < rows)
    out = np.zeros(shape[:2], bool)
    out[inside] = mask[j[inside], i[inside]]
    return out


def test_lung_overlay_from_the_pipeline_is_on_the_lungs(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path
) -> None:
    paths = sorted(SAMPLE.glob("CT_*.dcm"))
    volume = load_series(paths)
    result = create_pipeline("ct-lungs").run(volume)
    written = write_results(volume, result, ResultsConfig(), job_key="viewer-test/ct-lungs", out_dir=tmp_path)
    seg = next(w for w in written if w.kind == "seg")
    outcomes = send_objects(
        [*paths, *(w.path for w in written)], orthanc_web.ae_title, "127.0.0.1", orthanc_web.dicom_port,
        calling_ae_title="PACSNODE",
    )
    assert all(o.stored for o in outcomes), [o.describe() for o in outcomes if not o.stored]

    union = np.zeros(volume.array.shape, bool)
    for segment in result.segments:
        union |= segment.mask
    areas = union.reshape(union.shape[0], -1).sum(axis=1)
    on_k = int(np.argmax(areas))
    off_k = int(np.flatnonzero(areas == 0)[0])
    on_uid = volume.datasets[on_k].SOPInstanceUID
    off_uid = volume.datasets[off_k].SOPInstanceUID
    seg_description = str(pydicom.dcmread(seg.path, stop_before_pixels=True).SeriesDescription)
    shots = artifacts_dir / "pipeline-ct-lungs"

    viewer.open_study(str(volume.datasets[0].StudyInstanceUID))
    viewer.load_series(seg_description)
    viewer.show_instance(on_uid)
    on = viewer.viewport_screenshot(shots / "1-seg-lungs-slice.png")
    expected = expected_on_screen(viewer, volume.affine, union[on_k], on_k, on.shape)
    notices = viewer.notifications()
    viewer.show_instance(off_uid)
    off = viewer.viewport_screenshot(shots / "2-seg-slice-without-lung.png")

    coloured = coloured_pixels(on)
    near = ndimage.binary_dilation(expected, iterations=4)
    core = ndimage.binary_erosion(expected, iterations=4)
    assert coloured.sum() > 0.5 * expected.sum(), f"{coloured.sum()} overlay pixels for {expected.sum()} lung pixels"
    assert coloured[~near].sum() < 0.02 * coloured.sum(), "overlay outside the lungs"
    assert coloured[core].mean() > 0.9, "the lungs are not covered by the overlay"
    assert coloured_pixels(off).sum() == 0, "overlay on a slice without lung"
    sr = next(w for w in written if w.kind == "sr")
    assert series_listed(viewer, str(pydicom.dcmread(sr.path, stop_before_pixels=True).SeriesDescription))
    assert not viewer.errors, viewer.errors
    (shots / "notifications.txt").write_text("\n".join(notices))
