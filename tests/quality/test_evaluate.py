"""`pacsnode evaluate` on cases built from the sample phantom, with references derived from its ground truth
and known perturbations; the expected Dice and HD95 are computed here, independently of the product's code
(NumPy overlap counts; surface points and a k-d tree in millimetres)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from pipelines.registry import create_pipeline
from pipelines.volume import load_series
from tests.quality.references import (
    copy_series,
    sample_files,
    shifted,
    truth_lungs,
    without_slices,
    write_reference_seg,
)

pytestmark = pytest.mark.timeout(180)
PACSNODE = Path(sys.executable).with_name("pacsnode")
SHIFT_VOXELS = 3
REMOVED_SLICES = range(30, 36)


def expected_dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int(np.logical_and(a, b).sum()) / total


def expected_hd95(a: np.ndarray, b: np.ndarray, spacing_kji: tuple[float, float, float]) -> float:
    def surface(mask: np.ndarray) -> np.ndarray:
        edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
        return np.argwhere(edge) * np.asarray(spacing_kji)

    pa, pb = surface(a), surface(b)
    a_to_b, _ = cKDTree(pb).query(pa)
    b_to_a, _ = cKDTree(pa).query(pb)
    return max(float(np.percentile(a_to_b, 95)), float(np.percentile(b_to_a, 95)))


@pytest.fixture(scope="module")
def predicted() -> dict[str, np.ndarray]:
    """What ct-lungs segments on the sample series (run here, so the expected values need no product code)."""
    result = create_pipeline("ct-lungs").run(load_series(sample_files()))
    return {segment.label: segment.mask for segment in result.segments}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, np.ndarray]]:
    """Case folders and the reference masks each holds."""
    root = tmp_path_factory.mktemp("cases")
    truth = truth_lungs()
    references = {
        "a-truth": truth,
        "b-shifted": {"Right lung": shifted(truth["Right lung"], SHIFT_VOXELS, axis=2), "Left lung": truth["Left lung"]},
        "c-slices-removed": {"Right lung": truth["Right lung"], "Left lung": without_slices(truth["Left lung"], REMOVED_SLICES)},
        "d-empty": {"Right lung": np.zeros_like(truth["Right lung"]), "Left lung": truth["Left lung"]},
    }
    for name, masks in references.items():
        copy_series(root / name / "images")
        write_reference_seg(masks, root / name / "reference-seg.dcm")
    # Labels only: the viewer coded both lungs as plain "Tissue"; they are matched by label, case-insensitively.
    copy_series(root / "e-labels-only")
    write_reference_seg({"RIGHT LUNG": truth["Right lung"], "left lung": truth["Left lung"]},
                        root / "e-labels-only" / "ref.dcm", types={})
    references["e-labels-only"] = truth
    # A reference that cannot be read: the case fails with the reason and the others go on.
    copy_series(root / "f-broken")
    good = pydicom.dcmread(root / "a-truth" / "reference-seg.dcm")
    good.save_as(root / "f-broken" / "ref.dcm")
    data = (root / "f-broken" / "ref.dcm").read_bytes()
    (root / "f-broken" / "ref.dcm").write_bytes(data[: len(data) // 2])
    # No reference at all.
    copy_series(root / "g-no-reference")
    # Findings: four cases without emphysema, one severe (the rare class, given by its SNOMED CT code value).
    findings = {"a-truth": "Absent", "b-shifted": "absent", "c-slices-removed": "272519000", "d-empty": "Absent"}
    for name, value in {**findings, "e-labels-only": "24484000"}.items():
        key = "87433001" if name == "b-shifted" else "Pulmonary emphysema"
        (root / name / "reference.json").write_text(json.dumps({"classifications": {key: value}}))
    return {"root": root, **references}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def evaluated(cases: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    out = tmp_path_factory.mktemp("report")
    run = subprocess.run(
        [str(PACSNODE), "evaluate", "ct-lungs", str(cases["root"]), "--out", str(out)],
        capture_output=True, text=True, timeout=170, env={**os.environ, "COLUMNS": "200"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run, json.loads((out / "report.json").read_text()), out


def _case(report: dict, name: str) -> dict:
    return next(case for case in report["cases"] if case["case"] == name)


SPACING_KJI = (4.0, 2.2, 2.2)


@pytest.mark.parametrize("name", ["a-truth", "b-shifted", "c-slices-removed", "d-empty", "e-labels-only"])
def test_each_case_scores_as_computed_independently(evaluated, cases, predicted, name: str) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = evaluated
    case = _case(report, name)
    assert case["status"] == "ok", case["reason"]
    for label in ("Right lung", "Left lung"):
        ours, reference = predicted[label], cases[name][label]
        scored = case["segments"][label]
        assert scored["dice"] == pytest.approx(expected_dice(ours, reference), abs=1e-6)
        if reference.any():
            assert scored["hd95_mm"] == pytest.approx(expected_hd95(ours, reference, SPACING_KJI), abs=1e-4)
        else:
            assert scored["hd95_mm"] is None and scored["dice"] == 0.0
        assert scored["reference_volume_ml"] == pytest.approx(reference.sum() * 4.0 * 2.2 * 2.2 / 1000)
        assert scored["volume_ml"] == pytest.approx(ours.sum() * 4.0 * 2.2 * 2.2 / 1000)


def test_the_perturbations_lower_the_scores_as_expected(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = evaluated
    truth = _case(report, "a-truth")["segments"]
    assert truth["Right lung"]["dice"] > 0.999 and truth["Left lung"]["dice"] > 0.999
    shifted_right = _case(report, "b-shifted")["segments"]["Right lung"]
    assert 0.8 < shifted_right["dice"] < 0.95
    assert shifted_right["hd95_mm"] == pytest.approx(SHIFT_VOXELS * 2.2, abs=0.5)  # three 2.2 mm columns
    cut = _case(report, "c-slices-removed")["segments"]["Left lung"]
    assert cut["reference_volume_ml"] < cut["volume_ml"] and cut["dice"] < 0.97


def test_failed_cases_carry_their_reason_and_do_not_stop_the_others(evaluated) -> None:  # type: ignore[no-untyped-def]
    run, report, _ = evaluated
    broken = _case(report, "f-broken")
    assert broken["status"] == "failed" and "ref.dcm" in broken["reason"]
    missing = _case(report, "g-no-reference")
    assert missing["status"] == "failed" and "no reference" in missing["reason"]
    assert report["summary"]["cases_scored"] == 5 and report["summary"]["cases_failed"] == 2
    assert "f-broken" in run.stdout and "failed" in run.stdout


def test_the_summary_has_the_documented_shape(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = evaluated
    assert report["pipeline"] == "ct-lungs" and report["pipeline_version"] == "1.0.0"
    right = report["summary"]["segments"]["Right lung"]
    dice = [c["segments"]["Right lung"]["dice"] for c in report["cases"] if c["status"] == "ok"]
    assert right["cases"] == 5
    assert right["dice_mean"] == pytest.approx(np.mean(dice))
    low, high = right["dice_ci95"]
    assert low <= right["dice_mean"] <= high and low >= min(dice) and high <= max(dice)
    hd95 = [c["segments"]["Right lung"]["hd95_mm"] for c in report["cases"] if c["status"] == "ok"]
    assert right["hd95_mm_median"] == pytest.approx(np.median([h for h in hd95 if h is not None]))


def test_each_case_has_the_seg_and_sr_the_node_would_send(evaluated, cases) -> None:  # type: ignore[no-untyped-def]
    _, report, out = evaluated
    case = _case(report, "a-truth")
    assert sorted(case["outputs"]) == ["cases/a-truth/seg.dcm", "cases/a-truth/sr.dcm"]
    seg = pydicom.dcmread(out / "cases" / "a-truth" / "seg.dcm")
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == ["Right lung", "Left lung"]
    source = pydicom.dcmread(sample_files()[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID


def test_a_rare_class_shows_in_balanced_accuracy_and_recall(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, report, _ = evaluated
    # ct-lungs grades the phantom's lungs "Absent" (LAA-950 below 5 %): right for four cases, wrong for the severe one.
    assert _case(report, "e-labels-only")["classifications"]["Pulmonary emphysema"] == {"predicted": "Absent", "reference": "Severe"}
    emphysema = report["summary"]["classifications"]["Pulmonary emphysema"]
    assert emphysema["cases"] == 5
    assert emphysema["accuracy"] == pytest.approx(4 / 5)
    assert emphysema["balanced_accuracy"] == pytest.approx((1.0 + 0.0) / 2)
    assert emphysema["per_class"]["Severe"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert emphysema["per_class"]["Absent"]["precision"] == pytest.approx(4 / 5)
    assert emphysema["confusion"] == {"Absent": {"Absent": 4, "Severe": 0}, "Severe": {"Absent": 1, "Severe": 0}}


def test_report_html_is_self_contained_with_its_plots(evaluated) -> None:  # type: ignore[no-untyped-def]
    _, _, out = evaluated
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 3  # Dice per case and segment, Bland-Altman, the confusion matrix
    assert "Bland-Altman" in html and "f-broken" in html
    assert "src=\"http" not in html and "href=\"http" not in html
