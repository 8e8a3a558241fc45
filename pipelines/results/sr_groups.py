"""The measurement groups of pacsnode's TID 1500 report, one kind of result at a time.

* A segment: a volumetric ROI group (TID 1411) that references it in the SEG and holds its measurements, and a
  planar ROI group (TID 1410) with its outline on its key slice as a closed SCOORD POLYLINE on that image. Both
  carry the segment's tracking identifier and UID, which the SEG's segment carries too: viewers that merge
  groups by tracking UID (OHIF) draw the outline labelled with the measurements.
* A finding: the same pair when it has a segment; otherwise one planar group with its box (POLYLINE), circle
  (ELLIPSE) or point (POINT) on its key slice and the measurements. A finding with a point also gets a planar
  group with the exact point as SCOORD3D in the frame of reference (geometric purpose "Center").
* A classification: a TID 1501 group with the finding as a qualitative evaluation, its probability, and what
  it concerns: the image (a source image reference), the series or the study (its UID).

Every group names the algorithm (TID 4019: name, version, parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipelines.results.locations import SliceGraphic, finding_graphic, key_slice, outline
from pipelines.results.seg import coded
from pipelines.types import Classification, Finding, Measurement, PipelineResult, Segment, Volume

PROBABILITY = codes.DCM.Probability
NO_UNITS = codes.UCUM.NoUnits


def algorithm(result: PipelineResult) -> hd.sr.AlgorithmIdentification:
    """TID 4019: the pipeline's name, version and parameters (``name=value``)."""
    parameters = [f"{name}={value}"[:64] for name, value in result.parameters.items()] or None
    return hd.sr.AlgorithmIdentification(name=result.pipeline, version=result.version, parameters=parameters)


def measurement(item: Measurement, algorithm_id: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=coded(item.name), value=item.value, unit=coded(item.unit), algorithm_id=algorithm_id)


def probability(value: float | None, algorithm_id: hd.sr.AlgorithmIdentification) -> list[hd.sr.Measurement]:
    if value is None:
        return []
    return [hd.sr.Measurement(name=PROBABILITY, value=value, unit=NO_UNITS, algorithm_id=algorithm_id)]


def tracking(uid: str, identifier: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=uid, identifier=identifier[:64])


def image_of_slice(volume: Volume, k: int) -> tuple[str, str, list[int] | None]:
    """SOP class, SOP instance and frame numbers (multi-frame sources) of slice ``k``."""
    if volume.frame_numbers is not None:
        source = volume.datasets[0]
        return str(source.SOPClassUID), str(source.SOPInstanceUID), [int(volume.frame_numbers[k])]
    source = volume.datasets[k]
    return str(source.SOPClassUID), str(source.SOPInstanceUID), None


def image_region(volume: Volume, graphic: SliceGraphic) -> hd.sr.ImageRegion:
    """A SCOORD on the image of the graphic's slice."""
    sop_class, sop_instance, frames = image_of_slice(volume, graphic.k)
    source = hd.sr.SourceImageForRegion(sop_class, sop_instance, referenced_frame_numbers=frames)
    return hd.sr.ImageRegion(graphic_type=graphic.graphic_type, graphic_data=graphic.points, source_image=source)


def referenced_segment(seg: Dataset, number: int, source_series_uid: str) -> hd.sr.ReferencedSegment:
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
    )


def segment_groups(
    volume: Volume,
    result: PipelineResult,
    seg: Dataset,
    tracking_uids: dict[int, str],
) -> list[hd.sr.Template]:
    """The volumetric and outline groups of each segment no finding stands for (findings report theirs)."""
    algorithm_id = algorithm(result)
    source_series_uid = str(volume.datasets[0].SeriesInstanceUID)
    of_findings = {finding.segment_number for finding in result.findings}
    groups: list[hd.sr.Template] = []
    for segment in sorted(result.segments, key=lambda s: s.number):
        if segment.number in of_findings:
            continue
        identifier = segment.tracking_id or segment.label
        values = [measurement(m, algorithm_id) for m in result.measurements if m.segment_number == segment.number]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking(tracking_uids[segment.number], identifier),
                referenced_segment=referenced_segment(seg, segment.number, source_series_uid),
                finding_category=coded(segment.category),
                finding_type=coded(segment.type),
                algorithm_id=algorithm_id,
                measurements=values or None,
            )
        )
        if not segment.empty:
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking(tracking_uids[segment.number], identifier),
                    referenced_region=image_region(volume, outline(segment, key_slice(segment))),
                    finding_category=coded(segment.category),
                    finding_type=coded(segment.type),
                    algorithm_id=algorithm_id,
                )
            )
    return groups


def finding_groups(
    volume: Volume,
    result: PipelineResult,
    finding: Finding,
    tracking_uid: str,
    seg: Dataset | None,
) -> list[hd.sr.Template]:
    """The groups of one finding (see the module's description), all with ``tracking_uid``."""
    algorithm_id = algorithm(result)
    segment = _segment(result, finding)
    identifier = finding.tracking_id or finding.label
    values = [
        *(measurement(m, algorithm_id) for m in result.measurements if segment and m.segment_number == segment.number),
        *(measurement(m, algorithm_id) for m in finding.measurements),
        *probability(finding.probability, algorithm_id),
    ]
    described = {
        "finding_category": coded(finding.category),
        "finding_type": coded(finding.finding_type),
        "algorithm_id": algorithm_id,
    }
    groups: list[hd.sr.Template] = []
    if segment is not None:
        if seg is None:
            raise ValueError(f"finding {finding.label!r}: its segment can only be reported with the SEG that holds it")
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking(tracking_uid, identifier),
                referenced_segment=referenced_segment(seg, segment.number, str(volume.datasets[0].SeriesInstanceUID)),
                measurements=values or None,
                **described,
            )
        )
    groups.append(
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking(tracking_uid, identifier),
            referenced_region=image_region(volume, finding_graphic(volume, finding, segment)),
            measurements=(values or None) if segment is None else None,
            **described,
        )
    )
    if finding.point is not None:
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking(tracking_uid, identifier),
                referenced_region=hd.sr.ImageRegion3D(
                    graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                    graphic_data=np.array([finding.point]),
                    frame_of_reference_uid=str(volume.datasets[0].FrameOfReferenceUID),
                ),
                geometric_purpose=codes.DCM.Center,
                **described,
            )
        )
    return groups


def _segment(result: PipelineResult, finding: Finding) -> Segment | None:
    if finding.segment_number is None:
        return None
    for segment in result.segments:
        if segment.number == finding.segment_number:
            return segment
    raise ValueError(f"finding {finding.label!r} names segment {finding.segment_number}, which the result lacks")


def scope_items(volume: Volume, scope: str, slice_index: int | None) -> list[hd.sr.ContentItem]:
    """What a TID 1501 group concerns: an image reference, or the series' or study's UID."""
    if scope == "image":
        assert slice_index is not None
        if not 0 <= slice_index < volume.array.shape[0]:
            raise ValueError(f"classification of slice {slice_index}, but the series has {volume.array.shape[0]}")
        sop_class, sop_instance, frames = image_of_slice(volume, slice_index)
        return [hd.sr.SourceImageForMeasurementGroup(sop_class, sop_instance, referenced_frame_numbers=frames)]
    name, uid = (
        (codes.DCM.StudyInstanceUID, volume.datasets[0].StudyInstanceUID)
        if scope == "study"
        else (codes.DCM.SeriesInstanceUID, volume.datasets[0].SeriesInstanceUID)
    )
    return [hd.sr.UIDRefContentItem(name=name, value=str(uid), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)]


def qualitative_group(
    volume: Volume,
    result: PipelineResult,
    tracking_uid: str,
    identifier: str,
    *,
    classification: Classification | None = None,
    measurements: Sequence[Measurement] = (),
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A TID 1501 group: one classification (finding, probability) and/or measurements of no region."""
    algorithm_id = algorithm(result)
    values = [measurement(m, algorithm_id) for m in measurements]
    evaluations = None
    scope, slice_index = "series", None
    if classification is not None:
        values += probability(classification.probability, algorithm_id)
        evaluation = hd.sr.QualitativeEvaluation(name=coded(classification.concept), value=coded(classification.value))
        evaluations = [evaluation]
        scope, slice_index = classification.scope, classification.slice_index
    scoped = scope_items(volume, scope, slice_index)
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking(tracking_uid, identifier),
        algorithm_id=algorithm_id,
        qualitative_evaluations=evaluations,
        measurements=values or None,
        source_images=[item for item in scoped if isinstance(item, hd.sr.SourceImageForMeasurementGroup)] or None,
    )
    group[0].ContentSequence.extend(item for item in scoped if isinstance(item, hd.sr.UIDRefContentItem))
    return group
