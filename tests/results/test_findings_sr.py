"""Findings and segments located in the SR: each group's region is on the right image, where the finding is.

Every object written passes dciodvfy and reads back with highdicom; positions are checked against the masks,
boxes and points themselves, in patient coordinates, for an axial and an oblique, flipped series.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from skimage.draw import polygon2mask

from pipelines.results import write_results
from pipelines.types import Classification, Code, Finding, Measurement, PipelineResult, Volume, box_of_voxels
from tests.support.results import DISEASE, EMPHYSEMA, dciodvfy_errors, make_result

NODULE = Code("27925004", "SCT", "Nodule")
DIAMETER = Code("81827009", "SCT", "Diameter")
MILLIMETER = Code("mm", "UCUM", "millimeter")
GEOMETRIES = [{"orientation": "axial"}, {"orientation": "oblique", "reverse": True, "shuffle": True}]


def with_findings(volume: Volume) -> PipelineResult:
    """The shapes result with a point, a circle, a box and a finding that is segment 1, and scoped findings."""
    result = make_result(volume)
    result.findings = [
        Finding(NODULE, "point", point=volume.to_patient((20.3, 15.2, 5.4)), probability=0.91,
                measurements=[Measurement(DIAMETER, 6.0, MILLIMETER)]),
        Finding(NODULE, "circle", point=volume.to_patient((30, 25, 7)), diameter_mm=8.0, probability=0.7),
        Finding(NODULE, "box", box=box_of_voxels(volume, (5, 5, 2), (15, 12, 4)), probability=0.55),
        Finding(NODULE, "sphere lesion", segment_number=1, probability=0.99),
    ]
    result.classifications += [
        Classification(DISEASE, EMPHYSEMA, 0.4, scope="study"),
        Classification(DISEASE, EMPHYSEMA, 0.6, scope="image", slice_index=3),
    ]
    result.parameters = {"threshold": "-950 HU", "smallest": "1 mL"}
    return result


def planar_groups(report: hd.sr.Comprehensive3DSR, identifier: str) -> list:
    return [g for g in report.content.get_planar_roi_measurement_groups() if g.tracking_identifier == identifier]


def region_on_image(volume: Volume, group) -> tuple[int, np.ndarray, str]:  # type: ignore[no-untyped-def]
    """The slice index the group's SCOORD references, its (column, row) points, its graphic type."""
    region = group.roi
    (image,) = region.ContentSequence
    uid = image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    k = [str(ds.SOPInstanceUID) for ds in volume.datasets].index(uid)
    return k, np.asarray(region.value), region.graphic_type.value


def to_patient(volume: Volume, k: int, points: np.ndarray) -> np.ndarray:
    ij = points - 0.5
    return (volume.affine @ np.c_[ij, np.full(len(ij), k), np.ones(len(ij))].T)[:3].T


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["axial", "oblique-flipped"])
def test_findings_are_located_where_they_are(series_volume, options, tmp_path, geometry) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume(**geometry)
    result = with_findings(volume)
    written = {w.kind: w for w in write_results(volume, result, options, "job-find", tmp_path / "out", key_objects=True)}
    assert dciodvfy_errors(written["sr"].path) == []
    report = hd.sr.srread(written["sr"].path)

    point, point_3d = planar_groups(report, "point")
    k, points, kind = region_on_image(volume, point)
    assert kind == "POINT" and k == 5
    assert np.allclose(to_patient(volume, k, points)[0], volume.to_patient((20.3, 15.2, 5)), atol=1e-3)
    assert point_3d.roi.graphic_type.value == "POINT"
    assert np.allclose(point_3d.roi.value[0], result.findings[0].point, atol=1e-3)
    assert point_3d.roi.frame_of_reference_uid == volume.datasets[0].FrameOfReferenceUID
    values = {m.name.value: float(m.value) for m in point.get_measurements()}
    assert values == {DIAMETER.value: 6.0, codes.DCM.Probability.value: pytest.approx(0.91)}

    circle = planar_groups(report, "circle")[0]
    k, points, kind = region_on_image(volume, circle)
    ends = to_patient(volume, k, points)
    assert kind == "ELLIPSE" and k == 7
    assert np.linalg.norm(ends[0] - ends[1]) == pytest.approx(8.0) and np.linalg.norm(ends[2] - ends[3]) == pytest.approx(8.0)
    assert np.allclose(ends.mean(axis=0), result.findings[1].point, atol=1e-3)

    (box,) = planar_groups(report, "box")
    k, points, kind = region_on_image(volume, box)
    low, high = (np.asarray(corner) for corner in result.findings[2].box)
    corners = to_patient(volume, k, points)
    assert kind == "POLYLINE" and k == 3 and np.allclose(points[0], points[-1]) and len(points) >= 4
    assert np.all(corners >= low - 1e-3) and np.all(corners <= high + 1e-3), "box outline outside the box"
    on_a_face = np.isclose(corners, low, atol=1e-3) | np.isclose(corners, high, atol=1e-3)
    assert on_a_face.any(axis=1).all(), "box outline vertices not on the box's faces"


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["axial", "oblique-flipped"])
def test_each_segment_is_outlined_on_its_key_slice(series_volume, options, tmp_path, geometry) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume(**geometry)
    result = with_findings(volume)
    written = {w.kind: w for w in write_results(volume, result, options, "job-outline", tmp_path / "out")}
    report = hd.sr.srread(written["sr"].path)
    seg = pydicom.dcmread(written["seg"].path, stop_before_pixels=True)
    tracking = {int(item.SegmentNumber): str(item.TrackingUID) for item in seg.SegmentSequence}

    for segment, identifier in ((result.segments[0], "sphere lesion"), (result.segments[1], "box-1")):
        (outline,) = planar_groups(report, identifier)
        k, points, kind = region_on_image(volume, outline)
        assert kind == "POLYLINE" and np.allclose(points[0], points[-1])
        assert k == int(np.argmax(segment.slice_areas())), "outline not on the slice with the largest area"
        drawn = polygon2mask(segment.shape[1:], points[:, ::-1] - 0.5)  # (row, column) of pixel centres
        assert np.array_equal(drawn, segment.on_slice(k)), f"outline of {identifier} does not follow its boundary"
        (volumetric,) = [g for g in report.content.get_volumetric_roi_measurement_groups()
                         if g.tracking_identifier == identifier]
        assert outline.tracking_uid == volumetric.tracking_uid == tracking[segment.number]


def test_classifications_say_what_they_concern(series_volume, options, tmp_path) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume()
    written = {w.kind: w for w in write_results(volume, with_findings(volume), options, "job-scope", tmp_path / "out")}
    dataset = pydicom.dcmread(written["sr"].path)
    groups = [item for item in dataset.ContentSequence[-1].ContentSequence
              if item.ConceptNameCodeSequence[0].CodeValue == "125007"]  # Measurement Group
    concerning = {}
    for group in groups:
        items = {it.ConceptNameCodeSequence[0].CodeMeaning: it for it in group.ContentSequence}
        if "Probability" not in {m.ConceptNameCodeSequence[0].CodeMeaning for m in group.ContentSequence
                                 if m.ValueType == "NUM"} or "Finding" in items:
            continue
        if "Study Instance UID" in items:
            concerning["study"] = items["Study Instance UID"].UID
        elif "Series Instance UID" in items:
            concerning["series"] = items["Series Instance UID"].UID
        else:
            image = next(it for it in group.ContentSequence if it.ValueType == "IMAGE")
            concerning["image"] = image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert concerning == {
        "series": volume.datasets[0].SeriesInstanceUID,
        "study": volume.datasets[0].StudyInstanceUID,
        "image": volume.datasets[3].SOPInstanceUID,
    }


def test_algorithm_is_identified_with_its_parameters_and_dcmqi_reads_the_report(series_volume, options, tmp_path) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume(orientation="oblique")
    written = {w.kind: w for w in write_results(volume, with_findings(volume), options, "job-dcmqi", tmp_path / "out")}
    report = hd.sr.srread(written["sr"].path)
    groups = [*report.content.get_planar_roi_measurement_groups(), *report.content.get_image_measurement_groups()]
    for group in groups:  # TID 4019 in every group
        texts = [(item.name.meaning, item.value) for item in group[0].ContentSequence if item.value_type.value == "TEXT"]
        assert ("Algorithm Name", "test-shapes") in texts and ("Algorithm Version", "1.2.3") in texts
        assert [value for name, value in texts if name == "Algorithm Parameters"] == ["threshold=-950 HU", "smallest=1 mL"]

    tool = Path(sys.executable).parent / "tid1500reader"
    out = tmp_path / "sr.json"
    completed = subprocess.run([str(tool), "--inputDICOM", str(written["sr"].path), "--outputMetadata", str(out)],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    read = json.loads(out.read_text())["Measurements"]
    by_identifier = {m["TrackingIdentifier"] for m in read}
    assert {"point", "circle", "box", "sphere lesion", "box-1"} <= by_identifier
    sphere = next(m for m in read if m["TrackingIdentifier"] == "sphere lesion" and "ReferencedSegment" in m)
    assert sphere["ReferencedSegment"] == 1
    assert {item["quantity"]["CodeMeaning"] for item in sphere["measurementItems"]} >= {"Volume", "Probability"}


def test_key_object_selection_flags_every_key_slice(series_volume, options, tmp_path) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume(orientation="oblique", shuffle=True)
    result = with_findings(volume)
    written = {w.kind: w for w in write_results(volume, result, options, "job-kos", tmp_path / "out", key_objects=True)}
    assert dciodvfy_errors(written["kos"].path) == []
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(pydicom.dcmread(written["kos"].path))
    assert kos.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59"
    assert kos.StudyInstanceUID == volume.datasets[0].StudyInstanceUID
    flagged = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in kos.ContentSequence
               if item.ValueType == "IMAGE"}
    areas = [int(np.argmax(s.slice_areas())) for s in result.segments]
    expected = {*areas, 5, 7, 3, 3}  # the point's, the circle's and the box's slices; the image classification's
    assert flagged == {str(volume.datasets[k].SOPInstanceUID) for k in expected}


def test_a_finding_outside_the_series_or_without_a_place_is_refused(series_volume, options, tmp_path) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume()
    with pytest.raises(ValueError, match="needs a point, a box or a segment"):
        Finding(NODULE, "nowhere")
    with pytest.raises(ValueError, match="probability"):
        Finding(NODULE, "sure", point=(0.0, 0.0, 0.0), probability=1.5)
    result = make_result(volume, classifications=False)
    result.findings = [Finding(NODULE, "far", point=volume.to_patient((3, 3, 40)))]
    with pytest.raises(ValueError, match="outside the series"):
        write_results(volume, result, options, "job-far", tmp_path / "out")


def test_voxel_and_patient_coordinates_round_trip_on_an_oblique_grid(series_volume) -> None:  # type: ignore[no-untyped-def]
    volume = series_volume(orientation="oblique", reverse=True)
    ijk = (3.25, 7.5, 4.0)
    assert np.allclose(volume.to_voxel(volume.to_patient(ijk)), ijk)
    low, high = box_of_voxels(volume, (1, 2, 3), (4, 6, 8))
    for corner in [(a, b, c) for a in (1, 4) for b in (2, 6) for c in (3, 8)]:
        point = np.asarray(volume.to_patient(corner))
        assert np.all(point >= np.asarray(low) - 1e-9) and np.all(point <= np.asarray(high) + 1e-9)
