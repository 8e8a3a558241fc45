"""The sample chest CT through pacsnode: Orthanc sends it to a running node, ct-lungs runs, the node returns SEG,
SR and fallback to Orthanc, and OHIF (on Orthanc's DICOMweb) shows the lung overlay where the lungs are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sqlalchemy import select

from node.db import Delivery, DeliveryState
from pipelines.registry import create_pipeline
from pipelines.volume import load_series
from tests.support.node_process import NodeProcess, free_port
from tests.support.ohif import (
    ViewerPage,
    load_sr_measurements,
    ohif_dist,
    ohif_server,
    series_listed,
    world_to_screen,
)
from tests.support.orthanc import Orthanc, running_orthanc

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


def _delivered(node: NodeProcess) -> list[Delivery]:
    with node.database.session() as session:
        rows = list(session.scalars(select(Delivery)).all())
    return rows if rows and all(r.state == DeliveryState.delivered for r in rows) else []


@pytest.fixture
def pacs_with_node(tmp_path: Path) -> Iterator[tuple[Orthanc, NodeProcess]]:
    """Orthanc with DICOMweb as the PACS, and a real `pacsnode serve` returning ct-lungs SEG, SR and fallback."""
    node_port = free_port()
    with running_orthanc(tmp_path / "orthanc", modalities={"node": ("PACSNODE", "127.0.0.1", node_port)},
                         dicomweb=True) as orthanc:
        extra = {
            "node": {"completion": {"quiet_seconds": 1}},
            "queue": {"embedded_worker": True, "reconcile_seconds": 1},
            "delivery": {"retry_initial_seconds": 0.5, "retry_max_seconds": 2, "connect_timeout": 2},
            "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                              "port": orthanc.dicom_port, "outputs": ["seg", "sr", "fallback"]}],
            "routes": [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["ct-lungs"], "destinations": ["pacs"]}],
        }
        node = NodeProcess(tmp_path / "node", port=node_port, extra=extra, start_timeout=90)
        node.start()
        try:
            yield orthanc, node
        finally:
            node.stop()


def test_study_through_pacsnode_shows_the_lungs_overlay_on_the_lungs(
    pacs_with_node: tuple[Orthanc, NodeProcess], browser: object, artifacts_dir: Path
) -> None:
    orthanc, node = pacs_with_node
    paths = sorted(SAMPLE.glob("CT_*.dcm"))
    ids = orthanc.upload(paths)
    orthanc.send_to_modality("node", [orthanc.get(f"/instances/{ids[0]}/study")["ID"]])
    node.wait_for(lambda: _delivered(node), timeout=150)

    # The same pipeline on the same volume gives the masks the node sent (it is deterministic).
    volume = load_series(paths)
    result = create_pipeline("ct-lungs").run(volume)
    union = np.zeros(volume.array.shape, bool)
    for segment in result.segments:
        union |= segment.mask
    areas = union.reshape(union.shape[0], -1).sum(axis=1)
    on_k, off_k = int(np.argmax(areas)), int(np.flatnonzero(areas == 0)[0])
    study_uid = str(volume.datasets[0].StudyInstanceUID)
    descriptions = {s["MainDicomTags"].get("Modality"): s["MainDicomTags"].get("SeriesDescription", "")
                    for s in orthanc.series_of_study(study_uid)}
    shots = artifacts_dir / "through-pacsnode-ct-lungs"

    with ohif_server(ohif_dist(), orthanc.http_port) as url:
        viewer = ViewerPage(browser, url)
        try:
            viewer.open_study(study_uid)
            viewer.load_series(descriptions["SEG"])
            viewer.show_instance(volume.datasets[on_k].SOPInstanceUID)
            on = viewer.viewport_screenshot(shots / "1-seg-lungs-slice.png")
            expected = expected_on_screen(viewer, volume.affine, union[on_k], on_k, on.shape)
            viewer.show_instance(volume.datasets[off_k].SOPInstanceUID)
            off = viewer.viewport_screenshot(shots / "2-seg-slice-without-lung.png")
            assert series_listed(viewer, descriptions["SR"]), "the SR is not listed in OHIF"
            assert load_sr_measurements(viewer, descriptions["SR"]) > 0, "OHIF read no measurement from the SR"
            viewer.show_series(descriptions["OT"] if "OT" in descriptions else descriptions["SC"])
            fallback = viewer.viewport_screenshot(shots / "3-fallback-key-slice.png")
            assert not viewer.errors, viewer.errors
        finally:
            viewer.close()

    coloured = coloured_pixels(on)
    near = ndimage.binary_dilation(expected, iterations=4)
    core = ndimage.binary_erosion(expected, iterations=4)
    assert coloured.sum() > 0.5 * expected.sum(), f"{coloured.sum()} overlay pixels for {expected.sum()} lung pixels"
    assert coloured[~near].sum() < 0.02 * coloured.sum(), "overlay outside the lungs"
    assert coloured[core].mean() > 0.9, "the lungs are not covered by the overlay"
    assert coloured_pixels(off).sum() == 0, "overlay on a slice without lung"
    red = fallback[..., 0].astype(int) - np.maximum(fallback[..., 1], fallback[..., 2]) > 80  # segment 1's colour
    assert red.sum() > 200, "the fallback key slice shows no red outline of the first segment"
