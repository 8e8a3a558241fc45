"""TID 1500 Measurement Report (Comprehensive 3D SR) from a pipeline's measurements and classifications.

Each segment gets a volumetric ROI measurement group (TID 1411) that references its segment in the SEG;
measurements of no segment go into one TID 1501 group; each classification gets its own TID 1501 group with
the finding as a qualitative evaluation and, where the model gives one, its probability as a measurement.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipelines.settings import ResultOptions
from pipelines.results.seg import coded, source_images
from pipelines.results.uids import device_uid
from pipelines.types import Classification, Measurement, PipelineResult, Segment, Volume

logger = logging.getLogger(__name__)

PROBABILITY = codes.DCM.Probability
NO_UNITS = codes.UCUM.NoUnits
QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")

_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "MR": codes.LN.MRIUnspecifiedBodyRegion,
}


def _algorithm(result: PipelineResult) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=result.pipeline, version=result.version)


def _measurement(measurement: Measurement, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=coded(measurement.name),
        value=measurement.value,
        unit=coded(measurement.unit),
        algorithm_id=algorithm,
    )


def observation_context(result: PipelineResult, options: ResultOptions) -> hd.sr.ObservationContext:
    """The algorithm as the observing device."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(result.pipeline, result.version),
        name=result.pipeline,
        manufacturer_name=options.manufacturer,
        model_name=result.version,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def segment_groups(
    result: PipelineResult,
    seg: Dataset,
    source_series_uid: str,
    tracking_uids: Sequence[str],
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """One volumetric ROI group per segment, referencing that segment of ``seg``, with its measurements."""
    algorithm = _algorithm(result)
    segments: list[Segment] = sorted(result.segments, key=lambda segment: segment.number)
    groups = []
    for segment, tracking in zip(segments, tracking_uids, strict=True):
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking, identifier=segment.tracking_id or segment.label
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=segment.number,
                    source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
                ),
                finding_category=coded(segment.category),
                finding_type=coded(segment.type),
                algorithm_id=algorithm,
                measurements=[
                    _measurement(measurement, algorithm)
                    for measurement in result.measurements
                    if measurement.segment_number == segment.number
                ]
                or None,
            )
        )
    return groups


def classification_group(
    classification: Classification, result: PipelineResult, tracking_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A TID 1501 group holding one finding (concept = value) and its probability where given."""
    algorithm = _algorithm(result)
    probability = (
        [hd.sr.Measurement(name=PROBABILITY, value=classification.probability, unit=NO_UNITS, algorithm_id=algorithm)]
        if classification.probability is not None
        else None
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=classification.concept.meaning[:64]),
        algorithm_id=algorithm,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=coded(classification.concept), value=coded(classification.value))
        ],
        measurements=probability,
    )


def _finite_only(result: PipelineResult, series_uid: str) -> PipelineResult:
    """``result`` without measurements that are not numbers (e.g. the mean of an empty segment): DICOM
    decimal strings cannot hold them."""
    finite = [m for m in result.measurements if math.isfinite(m.value)]
    for measurement in result.measurements:
        if not math.isfinite(measurement.value):
            logger.warning(
                "series %s: %s measurement %r of segment %s is %s; left out of the report",
                series_uid, result.pipeline, measurement.name.meaning, measurement.segment_number, measurement.value,
            )
    return result if len(finite) == len(result.measurements) else dataclasses.replace(result, measurements=finite)


def replacement_note(text: str) -> hd.sr.ContainerContentItem:
    """TID 1500's Qualitative Evaluations container with one Comment: which earlier report this one replaces."""
    note = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    note.ContentSequence = hd.sr.ContentSequence([
        hd.sr.TextContentItem(name=codes.DCM.Comment, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    ])
    return note


def build_report(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    *,
    series_uid: str,
    sop_instance_uid: str,
    segment_tracking_uids: Sequence[str],
    group_tracking_uids: Sequence[str],
    seg: Dataset | None,
    replaces: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """The measurement report of ``result`` on ``volume``; ``seg`` is the SEG its segment groups reference.

    ``group_tracking_uids`` holds one UID for the group of segment-less measurements followed by one per
    classification. ``replaces``, for a re-run, says in words which earlier report this one replaces (a
    Comment under Qualitative Evaluations). Raises ValueError when there is nothing to report or segments
    have no SEG to reference.
    """
    source_series_uid = volume.datasets[0].SeriesInstanceUID
    result = _finite_only(result, source_series_uid)
    groups: list = []
    if result.segments:
        if seg is None:
            raise ValueError("segments can only be reported with the SEG that holds them")
        groups.extend(segment_groups(result, seg, source_series_uid, segment_tracking_uids))
    segment_numbers = {segment.number for segment in result.segments}
    unattached = [m for m in result.measurements if m.segment_number not in segment_numbers]
    algorithm = _algorithm(result)
    if unattached:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=group_tracking_uids[0], identifier="whole volume"),
                algorithm_id=algorithm,
                measurements=[_measurement(measurement, algorithm) for measurement in unattached],
            )
        )
    for classification, tracking in zip(result.classifications, group_tracking_uids[1:]):
        groups.append(classification_group(classification, result, tracking))
    if not groups:
        raise ValueError(f"{result.pipeline}: nothing to report (no segments, measurements or classifications)")

    modality = str(volume.datasets[0].get("Modality", ""))
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(result, options),
        procedure_reported=_PROCEDURES.get(modality, codes.SCT.ImagingProcedure),
        imaging_measurements=groups,
    )
    if replaces:
        report[0].ContentSequence.append(replacement_note(replaces))
    evidence = [seg, *volume.datasets] if seg is not None else source_images(volume)
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_uid,
        series_number=options.series_number + 1,
        series_description=f"{options.series_description_prefix} {result.pipeline} report"[:64],
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=options.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
