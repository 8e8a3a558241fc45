"""TID 1500 Measurement Report (Comprehensive 3D SR) of a pipeline's segments, findings, measurements and
classifications; the groups themselves are made in ``pipelines.results.sr_groups``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipelines.results import sr_groups
from pipelines.results.seg import source_images
from pipelines.results.uids import device_uid
from pipelines.settings import ResultOptions
from pipelines.types import PipelineResult, Volume

logger = logging.getLogger(__name__)

_PROCEDURES = {
    "CT": codes.LN.CTUnspecifiedBodyRegion,
    "MR": codes.LN.MRIUnspecifiedBodyRegion,
}


def device_observer(result: PipelineResult, options: ResultOptions) -> hd.sr.ObserverContext:
    """The algorithm (pipeline name and version) as the observing device."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(result.pipeline, result.version),
        name=result.pipeline,
        manufacturer_name=options.manufacturer,
        model_name=result.version,
    )
    return hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)


def observation_context(result: PipelineResult, options: ResultOptions) -> hd.sr.ObservationContext:
    """The algorithm as the observing device."""
    return hd.sr.ObservationContext(observer_device_context=device_observer(result, options))


def _finite_only(result: PipelineResult, series_uid: str) -> PipelineResult:
    """``result`` without measurements that are not numbers (e.g. the mean of an empty segment): DICOM
    decimal strings cannot hold them."""
    dropped = [m for m in result.measurements if not math.isfinite(m.value)]
    dropped += [m for f in result.findings for m in f.measurements if not math.isfinite(m.value)]
    if not dropped:
        return result
    for measurement in dropped:
        logger.warning(
            "series %s: %s measurement %r (segment %s) is %s; left out of the report",
            series_uid, result.pipeline, measurement.name.meaning, measurement.segment_number, measurement.value,
        )
    return dataclasses.replace(
        result,
        measurements=[m for m in result.measurements if math.isfinite(m.value)],
        findings=[
            dataclasses.replace(f, measurements=[m for m in f.measurements if math.isfinite(m.value)])
            for f in result.findings
        ],
    )


def build_report(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    *,
    series_uid: str,
    sop_instance_uid: str,
    segment_tracking_uids: Sequence[str],
    group_tracking_uids: Sequence[str],
    finding_tracking_uids: Sequence[str] = (),
    seg: Dataset | None,
) -> hd.sr.Comprehensive3DSR:
    """The measurement report of ``result`` on ``volume``; ``seg`` is the SEG its segment groups reference.

    ``segment_tracking_uids`` holds one UID per segment (by number), the UIDs the SEG's segments carry;
    ``group_tracking_uids`` one for the group of segment-less measurements followed by one per classification;
    ``finding_tracking_uids`` one per finding (a finding with a segment uses its segment's). Raises ValueError
    when there is nothing to report, segments have no SEG to reference, or a location is outside the series.
    """
    source_series_uid = volume.datasets[0].SeriesInstanceUID
    result = _finite_only(result, source_series_uid)
    by_segment = dict(zip(sorted(s.number for s in result.segments), segment_tracking_uids, strict=True))
    groups: list = []
    if result.segments:
        if seg is None:
            raise ValueError("segments can only be reported with the SEG that holds them")
        groups.extend(sr_groups.segment_groups(volume, result, seg, by_segment))
    if len(finding_tracking_uids) < len(result.findings):
        raise ValueError(f"{len(result.findings)} findings need as many tracking UIDs")
    for finding, uid in zip(result.findings, finding_tracking_uids):
        tracking_uid = by_segment.get(finding.segment_number, uid) if finding.segment_number else uid
        groups.extend(sr_groups.finding_groups(volume, result, finding, tracking_uid, seg))
    segment_numbers = set(by_segment)
    unattached = [m for m in result.measurements if m.segment_number not in segment_numbers]
    if unattached:
        groups.append(
            sr_groups.qualitative_group(volume, result, group_tracking_uids[0], "whole volume", measurements=unattached)
        )
    for classification, tracking in zip(result.classifications, group_tracking_uids[1:], strict=True):
        identifier = classification.concept.meaning
        groups.append(sr_groups.qualitative_group(volume, result, tracking, identifier, classification=classification))
    if not groups:
        raise ValueError(
            f"{result.pipeline}: nothing to report (no segments, findings, measurements or classifications)"
        )

    modality = str(volume.datasets[0].get("Modality", ""))
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(result, options),
        procedure_reported=_PROCEDURES.get(modality, codes.SCT.ImagingProcedure),
        imaging_measurements=groups,
    )
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
