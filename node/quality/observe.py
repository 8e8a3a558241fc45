"""What quality monitoring keeps of each job's run: its pipeline version, the values it reported, the series'
acquisition attributes, or that it refused the series.

A succeeded run is recorded in the transaction that marks the job succeeded (no commit of its own: a node's
no-op jobs would otherwise pay a second fsync each); a refusal is recorded after the job's failure, and a
problem recording it is logged, never raised."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, delete, insert
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
    named: Counter[str] = Counter()
    for measurement in result.measurements:
        if measurement.value != measurement.value:  # NaN: an empty segment has no mean
            continue
        segment = labels.get(measurement.segment_number) if measurement.segment_number is not None else None
        name = f"{segment}: {measurement.name.meaning}" if segment else measurement.name.meaning
        observation.values.append((_unique(name, named), float(measurement.value), None, measurement.unit.value[:32]))
    for finding in result.classifications:
        observation.values.append((_unique(finding.concept.meaning, named), None, finding.value.meaning[:128], None))
    return observation


def _unique(name: str, named: Counter[str]) -> str:
    """``name`` (shortened to fit), numbered from its second use: one job's values are keyed by name."""
    named[name] += 1
    suffix = f" ({named[name]})" if named[name] > 1 else ""
    return name[: 160 - len(suffix)] + suffix


def record_run(connection: Connection, job_id: int, series_uid: str, observation: Observation) -> None:
    """Keep the run's observation in the caller's transaction (a re-run replaces the job's earlier one)."""
    now = utcnow()
    connection.execute(delete(QualityMeasurement).where(QualityMeasurement.job_id == job_id))
    connection.execute(delete(QualityRun).where(QualityRun.job_id == job_id))
    connection.execute(insert(QualityRun), [{
        "job_id": job_id, "pipeline": observation.pipeline, "pipeline_version": observation.version,
        "series_uid": series_uid, "refused": False, "reason": None, "inputs": observation.inputs, "recorded_at": now,
    }])
    if observation.values:
        connection.execute(insert(QualityMeasurement), [
            {"job_id": job_id, "pipeline": observation.pipeline, "pipeline_version": observation.version, "name": name,
             "value": value, "category": category, "unit": unit, "recorded_at": now}
            for name, value, category, unit in observation.values
        ])


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
