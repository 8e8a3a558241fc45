"""A SEG is shown in OHIF where its segment is, on the right slices, for plain, oblique and flipped-order CT."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from tests.support.ohif import OrthancWeb, ViewerPage
from tests.viewer.phantom import PhantomSeries, make_ct, write_seg, write_series
from tests.viewer.placement import check_overlay_placement

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(240)]


def _publish(orthanc: OrthancWeb, folder: Path, series: PhantomSeries, **seg_options: bool) -> str:
    """Upload the CT and the project's SEG of it; returns the SEG's series description."""
    for path in write_series(series, folder / "ct"):
        orthanc.upload(path)
    seg_path = write_seg(series, folder / "seg", **seg_options)
    orthanc.upload(seg_path)
    return str(pydicom.dcmread(seg_path, stop_before_pixels=True).SeriesDescription)


@pytest.mark.parametrize("omit_empty_frames", [False, True], ids=["all-frames", "empty-frames-omitted"])
def test_binary_seg_overlay_is_on_the_segment(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path, omit_empty_frames: bool
) -> None:
    series = make_ct()
    description = _publish(orthanc_web, tmp_path, series, omit_empty_frames=omit_empty_frames)
    name = "axial-" + ("sparse" if omit_empty_frames else "full")
    check_overlay_placement(viewer, series, description, artifacts_dir / name)


@pytest.mark.parametrize(
    ("orientation", "reverse_order"),
    [
        ((0.866025, 0.5, 0.0, -0.482963, 0.836516, 0.258819), False),
        ((1.0, 0.0, 0.0, 0.0, -1.0, 0.0), True),
    ],
    ids=["oblique", "flipped-order"],
)
def test_overlay_is_on_the_segment_for_oblique_and_flipped_series(
    viewer: ViewerPage,
    orthanc_web: OrthancWeb,
    artifacts_dir: Path,
    tmp_path: Path,
    orientation: tuple[float, ...],
    reverse_order: bool,
) -> None:
    series = make_ct(orientation=orientation, reverse_order=reverse_order)
    description = _publish(orthanc_web, tmp_path, series, omit_empty_frames=False)
    name = "oblique" if not reverse_order else "flipped-order"
    check_overlay_placement(viewer, series, description, artifacts_dir / name)


def test_a_misplaced_overlay_is_caught(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path
) -> None:
    """The check itself: a SEG drawn on the decoy square (a flip of both axes) must fail it."""
    series = make_ct()
    description = _publish(orthanc_web, tmp_path, series, omit_empty_frames=False, misplaced=True)
    with pytest.raises(AssertionError, match="target pixels|outside the target"):
        check_overlay_placement(viewer, series, description, artifacts_dir / "misplaced-control")
