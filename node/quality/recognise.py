"""Which received series are references: a foreign DICOM SEG (segments) or structured report (findings, such
as a reader's TID 1500 qualitative evaluations) that references a series the node processed.

A SEG or SR counts when it is not one of the node's own results (those are recorded in ``result_objects``), it
references a series with at least one job (through its Referenced Series Sequence or Current Requested
Procedure Evidence, or the source images of its frames), an SR also names a finding those jobs reported, and
the configured filters (calling AE titles, a Series Description pattern) let it through.
Such a series is recorded for scoring instead of being routed to pipelines.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from pydicom.dataset import Dataset
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from node.config import QualityConfig
from node.db import Instance, Job, QualityMeasurement, QualityReference, ResultObject, Series, SeriesState, get_or_add
from pipelines.evaluation.cases import is_segmentation, is_structured_report
from pipelines.evaluation.findings import ReferenceError, read_reference_findings

log = logging.getLogger(__name__)


def _items(dataset: Dataset, keyword: str) -> Iterator[Dataset]:
    yield from getattr(dataset, keyword, None) or []


def referenced_series(header: Dataset) -> set[str]:
    """Series UIDs a SEG names in its Referenced Series Sequence (the Common Instance Reference module), or a
    structured report in its Current Requested Procedure Evidence."""
    items = list(_items(header, "ReferencedSeriesSequence"))
    for study in _items(header, "CurrentRequestedProcedureEvidenceSequence"):
        items += list(_items(study, "ReferencedSeriesSequence"))
    return {str(item.SeriesInstanceUID) for item in items if "SeriesInstanceUID" in item}


def referenced_instances(header: Dataset) -> set[str]:
    """SOP Instance UIDs of the source images named in the SEG's shared or per-frame derivation items."""
    found: set[str] = set()
    groups = list(_items(header, "SharedFunctionalGroupsSequence")) + list(_items(header, "PerFrameFunctionalGroupsSequence"))
    for group in groups:
        for derivation in _items(group, "DerivationImageSequence"):
            for source in _items(derivation, "SourceImageSequence"):
                if "ReferencedSOPInstanceUID" in source:
                    found.add(str(source.ReferencedSOPInstanceUID))
    for source in _items(header, "SourceImageSequence"):
        if "ReferencedSOPInstanceUID" in source:
            found.add(str(source.ReferencedSOPInstanceUID))
    return found


def _processed_series(session: Session, header: Dataset) -> str | None:
    """The first series the object references that has jobs, if any."""
    candidates = referenced_series(header)
    if not candidates:
        instances = referenced_instances(header)
        if instances:
            candidates = set(session.scalars(
                select(Instance.series_uid).where(Instance.sop_instance_uid.in_(list(instances)[:500])).distinct()
            ))
    if not candidates:
        return None
    return session.scalars(select(Job.series_uid).where(Job.series_uid.in_(candidates)).limit(1)).first()


def _is_own_result(session: Session, header: Dataset) -> bool:
    return session.scalar(
        select(ResultObject.id).where(or_(
            ResultObject.sop_instance_uid == str(header.SOPInstanceUID),
            ResultObject.series_uid == str(header.SeriesInstanceUID),
        )).limit(1)
    ) is not None


def _names_no_finding(session: Session, header: Dataset, series_uid: str) -> bool:
    """A report counts only when one of its coded findings is one the series' jobs reported (a dose report or
    another unrelated SR about the series is routed as before)."""
    if not is_structured_report(header):
        return False
    try:
        concepts = {concept.casefold() for concept in read_reference_findings(header)}
    except ReferenceError:
        return True
    reported = session.scalars(
        select(QualityMeasurement.name).join(Job, Job.id == QualityMeasurement.job_id)
        .where(Job.series_uid == series_uid, QualityMeasurement.category.is_not(None))
    ).all()
    return not concepts & {name.casefold() for name in reported}


def _filtered_out(config: QualityConfig, header: Dataset, calling_ae_title: str | None) -> str | None:
    allowed = [title.strip() for title in config.reference_calling_ae_titles]
    if allowed and (calling_ae_title or "").strip() not in allowed:
        return f"sent by {calling_ae_title!r}, not one of quality.reference_calling_ae_titles"
    pattern = config.reference_series_description
    if pattern and not re.search(pattern, str(getattr(header, "SeriesDescription", ""))):
        return "its Series Description does not match quality.reference_series_description"
    return None


def recognise_reference(
    session: Session, config: QualityConfig, series: Series, header: Dataset
) -> tuple[SeriesState, str, None] | None:
    """The outcome of a complete series that is a reference (its instances recorded for scoring), or None
    when it is to be routed like any other series."""
    if not (is_segmentation(header) or is_structured_report(header)) or _is_own_result(session, header):
        return None
    processed = _processed_series(session, header)
    if processed is None or _names_no_finding(session, header, processed):
        return None
    excluded = _filtered_out(config, header, series.calling_ae_title)
    if excluded:
        log.info("series %s: a %s of processed series %s, not taken as a reference: %s", series.series_uid, header.Modality, processed, excluded)
        return None
    instances = session.scalars(select(Instance.sop_instance_uid).where(Instance.series_uid == series.series_uid)).all()
    for sop_instance_uid in instances:
        reference = get_or_add(session, QualityReference, sop_instance_uid=sop_instance_uid)
        reference.series_uid, reference.referenced_series_uid = series.series_uid, processed
        reference.calling_ae_title, reference.state, reference.reason = series.calling_ae_title, "pending", None
    log.info("series %s: reference %s (%d instance(s)) of processed series %s; scoring it", series.series_uid, header.Modality, len(instances), processed)
    return SeriesState.reference, f"reference for series {processed}", None
