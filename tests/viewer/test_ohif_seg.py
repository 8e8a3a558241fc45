"""A SEG is shown in OHIF where its segment is, on the right slices, for plain, oblique and flipped-order CT."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ohif import OrthancWeb, ViewerPage
from tests.viewer.phantom import make_ct, make_seg, write_series
from tests.viewer.placement import check_overlay_placement

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(240)]


def _publish(orthanc: OrthancWeb, folder: Path, series, seg) -> None:  # type: ignore[no-untyped-def]
    for path in write_series(series, folder / "ct"):
        orthanc.upload(path)
    seg_path = folder / "seg.dcm"
    seg.save_as(seg_path)
    orthanc.upload(seg_path)


@pytest.mark.parametrize("omit_empty_frames", [False, True], ids=["all-frames", "empty-frames-omitted"])
def test_binary_seg_overlay_is_on_the_segment(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path, omit_empty_frames: bool
) -> None:
    series = make_ct()
    seg = make_seg(series, omit_empty_frames=omit_empty_frames)
    _publish(orthanc_web, tmp_path, series, seg)
    name = "axial-" + ("sparse" if omit_empty_frames else "full")
    check_overlay_placement(viewer, series, str(seg.SeriesDescription), artifacts_dir / name)


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
    seg = make_seg(series, omit_empty_frames=False)
    _publish(orthanc_web, tmp_path, series, seg)
    name = "oblique" if not reverse_order else "flipped-order"
    check_overlay_placement(viewer, series, str(seg.SeriesDescription), artifacts_dir / name)


def test_a_misplaced_overlay_is_caught(
    viewer: ViewerPage, orthanc_web: OrthancWeb, artifacts_dir: Path, tmp_path: Path
) -> None:
    """The check itself: a SEG drawn on the decoy square (a flip of both axes) must fail it."""
    series = make_ct()
    flipped = series.mask[:, ::-1, ::-1].copy()
    seg = make_seg(series, omit_empty_frames=False, mask=flipped)
    _publish(orthanc_web, tmp_path, series, seg)
    with pytest.raises(AssertionError, match="target pixels|outside the target"):
        check_overlay_placement(viewer, series, str(seg.SeriesDescription), artifacts_dir / "misplaced-control")
