"""The placement check shared by the viewer tests: overlay on the target square, nowhere else, on no other slice."""

from __future__ import annotations

from pathlib import Path


from tests.support.ohif import ViewerPage
from tests.viewer.overlay import Box, bright_squares, new_square, overlay_pixels
from tests.viewer.phantom import PhantomSeries


def check_overlay_placement(viewer: ViewerPage, series: PhantomSeries, seg_description: str, shots: Path) -> Box:
    """Open the study, find the target square on screen, load the SEG and check where its colour lands."""
    on_slice = series.datasets[_target_index(series)]
    off_slice = series.datasets[_off_index(series)]
    viewer.open_study(series.study_uid)
    viewer.show_instance(on_slice.SOPInstanceUID)
    before_on = viewer.viewport_screenshot(shots / "1-ct-target-slice.png")
    viewer.show_instance(off_slice.SOPInstanceUID)
    before_off = viewer.viewport_screenshot(shots / "2-ct-other-slice.png")
    target = new_square(bright_squares(before_on), bright_squares(before_off))
    assert not overlay_pixels(before_on).any(), "overlay-coloured pixels before any SEG was loaded"

    viewer.load_series(seg_description)
    viewer.show_instance(on_slice.SOPInstanceUID)
    after_on = viewer.viewport_screenshot(shots / "3-seg-target-slice.png")
    viewer.show_instance(off_slice.SOPInstanceUID)
    after_off = viewer.viewport_screenshot(shots / "4-seg-other-slice.png")

    coloured = overlay_pixels(after_on)
    inside = coloured[target.mask(coloured.shape)].sum()
    outside = coloured[~target.grown(4).mask(coloured.shape)].sum()
    assert inside > 0.8 * target.area, f"overlay covers {inside} of {target.area} target pixels"
    assert outside < 0.01 * target.area, f"{outside} overlay pixels outside the target square"
    assert overlay_pixels(after_off).sum() == 0, "overlay shown on a slice the segment is not on"
    decoys = [box for box in bright_squares(before_on) if box != target]
    assert decoys and decoys[0] in bright_squares(after_on), "the viewport moved when the SEG loaded"
    assert not viewer.errors, f"page errors: {viewer.errors}"
    return target


def _target_index(series: PhantomSeries) -> int:
    """Index (in ``series.datasets``) of a slice in the middle of the segment."""
    with_mask = [i for i in range(len(series.datasets)) if series.mask[i].any()]
    return with_mask[len(with_mask) // 2]


def _off_index(series: PhantomSeries) -> int:
    """Index of a slice two slices away from the segment's end: the decoy is there, the target not."""
    with_mask = [i for i in range(len(series.datasets)) if series.mask[i].any()]
    return max(with_mask) + 2
