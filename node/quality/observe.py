"""What quality monitoring keeps of each job's run: its pipeline version, the values it reported, the series'
acquisition attributes, or that it refused the series. Recording never fails a job: a problem is logged."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError

from node.db import Database, QualityMeasurement, QualityRun, get_or_add, utcnow
from pipelines.types import PipelineResult

log = logging.getLogger(__name__)


@dataclass
class Observation:
    """A run's version, reported values ``(name, value, category, unit)`` and input attributes."""

    pipeline: str
    version: str
    values: list[tuple[str, float | None, str | None, str | None]] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)


def input_attributes(header: Dataset | None, keywords: Sequence[str]) -> dict[str, str]:
    """The acquisition attributes named by ``keywords`` as text (multi-valued ones joined by backslash)."""
    found = {}
    for keyword in keywords:
        value = getattr(header, keyword, None) if header is not None else None
        if value is None or value == "":
            continue
        found[keyword] = "\\".join(str(v) for v in value) if isinstance(value, pydicom.multival.MultiValue) else str(value)
    return found


def observe(header: Dataset, result: PipelineResult, keywords: Sequence[str]) -> Observation:
    """The values ``result`` reports, named ``"<segment>: <measurement>"`` (or the measurement alone for the
    whole series) and ``"<finding>"`` with its value as category."""
    labels = {segment.number: segment.label for segment in result.segments}
    observation = Observation(result.pipeline, result.version, inputs=input_attributes(header, keywords))
    for measurement in result.measurements:
        segment = labels.get(measurement.segment_number) if measurement.segment_number is not None else None
        name = f"{segment}: {measurement.name.meaning}" if segment else measurement.name.meaning
        observation.values.append((name[:160], float(measurement.value), None, measurement.unit.value[:32]))
    for finding in result.classifications:
        observation.values.append((finding.concept.meaning[:160], None, finding.value.meaning[:128], None))
    return observation


def record_run(database: Database, job_id: int, series_uid: str, observation: Observation) -> None:
    """Keep the run's observation (a re-run replaces the job's earlier one)."""
    now = utcnow()
    try:
        with database.session() as session:
            run = get_or_add(session, QualityRun, job_id=job_id)
            run.pipeline, run.pipeline_version, run.series_uid = observation.pipeline, observation.version, series_uid
            run.refused, run.reason, run.inputs, run.recorded_at = False, None, observation.inputs, now
            session.execute(delete(QualityMeasurement).where(QualityMeasurement.job_id == job_id))
            for name, value, category, unit in observation.values:
                if value is not None and value != value:  # NaN: an empty segment has no mean
                    continue
                session.add(QualityMeasurement(job_id=job_id, pipeline=observation.pipeline,
                                               pipeline_version=observation.version, name=name, value=value,
                                               category=category, unit=unit, recorded_at=now))
    except SQLAlchemyError:
        log.exception("job %s: its run could not be recorded for quality monitoring", job_id)


def record_refusal(
    database: Database, job_id: int, pipeline: str, version: str, series_uid: str, reason: str,
    first_path: Path | None, keywords: Sequence[str],
) -> None:
    """Keep that the pipeline refused the series (unsupported data), with the series' attributes."""
    header = None
    if first_path is not None:
        try:
            header = pydicom.dcmread(first_path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError):
            header = None
    try:
        with database.session() as session:
            run = get_or_add(session, QualityRun, job_id=job_id)
            run.pipeline, run.pipeline_version, run.series_uid = pipeline, version, series_uid
            run.refused, run.reason, run.recorded_at = True, reason[:2000], utcnow()
            run.inputs = input_attributes(header, keywords)
            session.execute(delete(QualityMeasurement).where(QualityMeasurement.job_id == job_id))
    except SQLAlchemyError:
        log.exception("job %s: its refusal could not be recorded for quality monitoring", job_id)
