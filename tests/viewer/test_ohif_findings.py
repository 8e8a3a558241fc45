"""OHIF draws the SR's locations where they are: a segment's outline on its key slice with its volume in the
label, a detection's box and point on the decoy square; a misplaced box fails the same check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.results import write_results
from pipelines.settings import ResultOptions
from pipelines.volume import load_datasets
from tests.support.ohif import (
    Drawn,
    OrthancWeb,
    ViewerPage,
    drawn_annotations,
    open_structured_report,
    world_to_screen,
)
from tests.viewer.findings import expected, findings_result, to_world
from tests.viewer.phantom import PhantomSeries, make_ct, write_series

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(240)]

TOLERANCE_PX = 4.0
"""How far (screenshot pixels) a drawn vertex may be from the true edge; one image pixel is about 6 here."""


def _publish(orthanc: OrthancWeb, folder: Path, series: PhantomSeries, *, misplaced: bool) -> tuple[str, float]:
    """Upload the CT and the project's SEG and SR of the findings; the SR's description and the volume (mL)."""
    for path in write_series(series, folder / "ct"):
        orthanc.upload(path)
    volume = load_datasets(series.datasets)
    result = findings_result(volume, misplaced=misplaced)
    for written in write_results(volume, result, ResultOptions(fallback_key_slices=0), str(folder), folder / "out"):
        orthanc.upload(written.path)
    description = str(pydicom.dcmread(folder / "out" / "sr.dcm", stop_before_pixels=True).SeriesDescription)
    return description, result.measurements[0].value


def _distance_to_outline(point: np.ndarray, polygon: np.ndarray) -> float:
    """Distance from ``point`` to the closed polygon's edges."""
    starts, ends = polygon, np.roll(polygon, -1, axis=0)
    edge = ends - starts
    starts, edge = starts[np.any(edge != 0, axis=1)], edge[np.any(edge != 0, axis=1)]  # a closed line repeats its start
    t = np.clip(np.einsum("ij,ij->i", point - starts, edge) / np.einsum("ij,ij->i", edge, edge), 0.0, 1.0)
    return float(np.min(np.linalg.norm(starts + t[:, None] * edge - point, axis=1)))


def assert_outline_on(drawn: Drawn, corners: np.ndarray, what: str) -> None:
    """One drawn polyline follows the polygon ``corners`` (screen pixels): each vertex on its edges, each corner
    on the polyline, within ``TOLERANCE_PX``."""
    def fits(line: list[tuple[float, float]]) -> bool:
        vertices = np.asarray(line)
        on_edges = all(_distance_to_outline(v, corners) <= TOLERANCE_PX for v in vertices)
        covers = all(_distance_to_outline(c, vertices) <= TOLERANCE_PX for c in corners)
        return on_edges and covers

    assert any(fits(line) for line in drawn.polylines), (
        f"no drawn outline of the {what} within {TOLERANCE_PX} px of {corners.round(1).tolist()}; "
        f"drawn: {[np.round(line, 1).tolist() for line in drawn.polylines]}"
    )


def assert_arrow_at(drawn: Drawn, point: np.ndarray, what: str) -> None:
    """A drawn arrow (OHIF's mark of a POINT) has its tip within ``TOLERANCE_PX`` of ``point``."""
    ends = [np.asarray(end) for line in drawn.lines for end in line]
    assert ends and min(np.linalg.norm(end - point) for end in ends) <= TOLERANCE_PX, (
        f"no arrow points at the {what} at {point.round(1).tolist()}; drawn lines: {drawn.lines}"
    )


def check_findings_drawn(
    viewer: ViewerPage, series: PhantomSeries, sr_description: str, volume_ml: float, shots: Path
) -> None:
    """Open the SR in OHIF and check, slice by slice, that each location is drawn where the phantom has it."""
    places = expected(series)
    viewer.open_study(series.study_uid)
    open_structured_report(viewer, sr_description)
    for name, place in places.items():
        viewer.show_instance(series.datasets[place.slice_index].SOPInstanceUID)
        viewer.viewport_screenshot(shots / f"{name}.png")
        drawn = drawn_annotations(viewer)
        screen = np.asarray(world_to_screen(viewer, to_world(series, place.slice_index, place.image_points)))
        if name == "point":
            assert_arrow_at(drawn, screen[0], name)
        else:
            assert_outline_on(drawn, screen, name)
        if name == "segment":
            label = f"Volume: {volume_ml:.2f} mL"
            assert any(label in lines for lines in drawn.texts), f"no label {label!r}; texts: {drawn.texts}"
    assert not viewer.errors, f"page errors: {viewer.errors}"


def test_segment_outline_box_and_point_are_drawn_where_they_are(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path
) -> None:
    series = make_ct()
    description, volume_ml = _publish(orthanc_web, tmp_path, series, misplaced=False)
    check_findings_drawn(viewer, series, description, volume_ml, artifacts_dir / "findings")


def test_a_misplaced_box_is_caught(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path
) -> None:
    """The check itself: a box moved a few pixels off the decoy square must fail it."""
    series = make_ct()
    description, volume_ml = _publish(orthanc_web, tmp_path, series, misplaced=True)
    with pytest.raises(AssertionError, match="no drawn outline of the box"):
        check_findings_drawn(viewer, series, description, volume_ml, artifacts_dir / "findings-misplaced")
