"""The metrics against values worked out by hand on small masks and short lists."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.metrics import classification_summary, mean_with_ci, segment_score


def _grid() -> np.ndarray:
    return np.zeros((12, 10, 10), dtype=bool)


def test_dice_of_a_box_and_the_box_shifted_by_two_of_ten_slices_is_0_8() -> None:
    a, b = _grid(), _grid()
    a[0:10, 2:5, 2:5] = True
    b[2:12, 2:5, 2:5] = True
    score = segment_score(a, b, (1.0, 1.0, 1.0))
    assert score.dice == pytest.approx(2 * 8 / 20)  # 8 of 10 slices overlap


def test_hd95_honours_anisotropic_spacing() -> None:
    # A row of five voxels (all surface) and the same row two slices further: every surface point is 2 slices
    # from the other surface; the slice spacing is 3 mm, so HD95 is 6 mm, not 2 voxels.
    a, b = _grid(), _grid()
    a[4, 5, 2:7] = True
    b[6, 5, 2:7] = True
    score = segment_score(a, b, (3.0, 0.7, 0.7))
    assert score.dice == 0.0
    assert score.hd95_mm == pytest.approx(6.0)
    # The same shift along the row axis (0.7 mm) measures 1.4 mm.
    c = _grid()
    c[4, 7, 2:7] = True
    assert segment_score(a, c, (3.0, 0.7, 0.7)).hd95_mm == pytest.approx(1.4)


def test_volumes_are_in_millilitres() -> None:
    a = _grid()
    a[0:10, 0:10, 0:10] = True  # 1000 voxels of 2 x 1 x 0.5 mm = 1 mL
    score = segment_score(a, a, (2.0, 1.0, 0.5))
    assert score.volume_ml == pytest.approx(1.0) and score.reference_volume_ml == pytest.approx(1.0)
    assert score.dice == 1.0 and score.hd95_mm == 0.0


def test_empty_masks_are_decided_explicitly() -> None:
    empty, some = _grid(), _grid()
    some[3:5, 3:5, 3:5] = True
    both = segment_score(empty, empty, (1.0, 1.0, 1.0))
    assert (both.dice, both.hd95_mm, both.volume_ml) == (1.0, None, 0.0)
    for prediction, reference in ((empty, some), (some, empty)):
        one = segment_score(prediction, reference, (1.0, 1.0, 1.0))
        assert (one.dice, one.hd95_mm) == (0.0, None)


def test_masks_on_different_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="different grids"):
        segment_score(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 3), bool), (1.0, 1.0, 1.0))


def test_a_rare_class_is_not_hidden_behind_accuracy() -> None:
    # Nine cases without emphysema, one severe; the pipeline says "Absent" to all but one absent case.
    reference = ["Absent"] * 9 + ["Severe"]
    predicted = ["Absent"] * 8 + ["Mild", "Absent"]
    summary = classification_summary(predicted, reference)
    assert summary["accuracy"] == pytest.approx(0.8)
    # Recall: Absent 8/9, Severe 0/1; balanced accuracy averages the recall of the classes the references hold.
    assert summary["balanced_accuracy"] == pytest.approx((8 / 9 + 0) / 2)
    absent = summary["per_class"]["Absent"]
    assert absent["precision"] == pytest.approx(8 / 9) and absent["recall"] == pytest.approx(8 / 9)
    assert absent["f1"] == pytest.approx(8 / 9) and absent["support"] == 9
    assert summary["per_class"]["Severe"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert summary["per_class"]["Mild"]["support"] == 0 and summary["per_class"]["Mild"]["precision"] == 0.0
    assert summary["confusion"]["Severe"]["Absent"] == 1
    assert summary["confusion"]["Absent"] == {"Absent": 8, "Mild": 1, "Severe": 0}
    assert summary["cases"] == 10


def test_bootstrap_interval_holds_the_mean_and_narrows_with_agreement() -> None:
    spread = [0.60, 0.95, 0.70, 0.90, 0.80, 0.85]
    tight = [0.80, 0.81, 0.79, 0.80, 0.82, 0.78]
    mean, interval = mean_with_ci(spread)
    assert mean == pytest.approx(np.mean(spread))
    assert interval[0] < mean < interval[1]
    assert interval[0] >= min(spread) and interval[1] <= max(spread)
    _, tight_interval = mean_with_ci(tight)
    assert tight_interval[1] - tight_interval[0] < (interval[1] - interval[0]) / 3
    assert mean_with_ci(spread) == (mean, interval)  # a fixed seed: the same scores give the same interval
    assert mean_with_ci([0.9]) == (0.9, None)
    assert mean_with_ci([0.5, 0.5]) == (0.5, [0.5, 0.5])
    assert mean_with_ci([]) == (None, None)
