"""One renderer for every picture of segments: the colours come from the SEG, the window from the source."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from pipelines.results import write_results
from pipelines.results.colours import segment_colour
from pipelines.results.render import SOFT_TISSUE_WINDOW, draw_segments, greyscale, key_slice_indices, seg_colours, window_of
from tests.support.results import make_result, seg_sr_options


def test_the_colours_read_back_from_a_seg_are_the_palette_it_was_written_with(series_volume, tmp_path):
    volume = series_volume()
    written = write_results(volume, make_result(volume, overlapping=True), seg_sr_options(), "render/1", tmp_path)
    seg = pydicom.dcmread(next(w.path for w in written if w.kind == "seg"))
    colours = seg_colours(seg)
    assert sorted(colours) == [1, 2, 3]
    for number, rgb in colours.items():  # CIELab round trip: within one step of the palette
        assert np.abs(np.subtract(rgb, segment_colour(number))).max() <= 1, number


def test_a_slice_is_shown_in_its_own_window_else_a_modality_default():
    ct = Dataset()
    ct.Modality = "CT"
    assert window_of(ct) == SOFT_TISSUE_WINDOW
    ct.WindowCenter, ct.WindowWidth = -600, 1500
    assert window_of(ct) == (-600.0, 1500.0)
    mr = Dataset()
    mr.Modality = "MR"
    values = np.arange(101, dtype=np.float32)
    centre, width = window_of(mr, values)
    assert (centre, width) == (50.0, 98.0)


def test_segments_are_tinted_or_outlined_in_their_colour():
    image = greyscale(np.zeros((10, 10)), (0.0, 2.0))  # mid grey
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    filled = draw_segments(image, [(mask, (255, 0, 0))])
    assert filled[5, 5, 0] > filled[5, 5, 1] and filled[0, 0, 0] == filled[0, 0, 1]
    outlined = draw_segments(image, [(mask, (0, 255, 0))], style="outline")
    assert tuple(outlined[2, 5]) == (0, 255, 0) and tuple(outlined[5, 5]) == tuple(image[5, 5])


def test_key_slices_are_the_largest_in_slice_order():
    assert key_slice_indices([0, 5, 1, 9, 0], 2) == [1, 3]
    assert key_slice_indices([0, 0, 0], 2) == [1]
