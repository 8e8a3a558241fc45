"""Scoring the references that arrive at the node against the jobs of the series they reference.

For a reference SEG, each job's own stored SEG and the reference are placed on the grid of the stored source
series, their segments paired and scored as ``pacsnode evaluate`` does. For a reference SR, its coded findings
are compared with the findings each job reported. Scores are stored per job and pipeline version; a
reference that fits no job is kept as ``unmatched`` with the reason, one that cannot be read as ``failed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import delete, select

from node.config import Settings
from node.db import (
    Database,
    Instance,
    Job,
    JobState,
    QualityMeasurement,
    QualityReference,
    QualityRun,
    QualityScore,
    ResultObject,
    utcnow,
)
from node.jobs.results import series_paths

log = logging.getLogger(__name__)

BATCH = 10


@dataclass(frozen=True)
class JobSeg:
    job_id: int
    pipeline: str
    version: str | None
    path: Path | None  # the job's SEG, if it wrote one


@dataclass(frozen=True)
class Pending:
    reference_id: int
    reference_path: Path | None
    series_uid: str
    source_paths: tuple[Path, ...]
    jobs: tuple[JobSeg, ...]


def _pending(database: Database, reference_id: int) -> Pending | None:
    with database.session() as session:
        reference = session.get(QualityReference, reference_id)
        if reference is None or reference.state != "pending":
            return None
        path = session.scalar(select(Instance.path).where(Instance.sop_instance_uid == reference.sop_instance_uid))
        rows = session.execute(
            select(Job.id, Job.pipeline, QualityRun.pipeline_version, ResultObject.path)
            .join(ResultObject, (ResultObject.job_id == Job.id) & (ResultObject.kind == "seg"), isouter=True)
            .join(QualityRun, QualityRun.job_id == Job.id, isouter=True)
            .where(Job.series_uid == reference.referenced_series_uid, Job.state == JobState.succeeded)
            .order_by(Job.id)
        ).all()
        return Pending(
            reference_id, Path(path) if path else None, reference.referenced_series_uid,
            series_paths(session, reference.referenced_series_uid),
            tuple(JobSeg(job_id, pipeline, version, Path(seg) if seg else None) for job_id, pipeline, version, seg in rows),
        )


def _finish(database: Database, reference_id: int, state: str, reason: str | None, scores: list[QualityScore]) -> None:
    with database.session() as session:
        reference = session.get(QualityReference, reference_id)
        if reference is None:
            return
        now = utcnow()
        session.execute(delete(QualityScore).where(QualityScore.reference_id == reference_id))
        for score in scores:
            score.scored_at = now
        session.add_all(scores)
        reference.state, reference.reason, reference.scored_at = state, reason, now


def _version(job: JobSeg) -> str:
    if job.version or job.path is None:
        return job.version or "unknown"
    seg = pydicom.dcmread(job.path, stop_before_pixels=True, specific_tags=["SoftwareVersions"])
    return str(getattr(seg, "SoftwareVersions", "") or "unknown")


def _finding_scores(database: Database, pending: Pending, report: pydicom.Dataset) -> tuple[list[QualityScore], list[str]]:
    """Every job's findings against the coded findings of a reference SR."""
    from pipelines.evaluation.findings import read_reference_findings
    from pipelines.evaluation.scoring import score_classifications
    from pipelines.types import Classification, Code

    expected = read_reference_findings(report)
    rows, notes = [], []
    with database.session() as session:
        reported = session.execute(
            select(QualityMeasurement.job_id, QualityMeasurement.name, QualityMeasurement.category)
            .where(QualityMeasurement.job_id.in_([job.job_id for job in pending.jobs]), QualityMeasurement.category.is_not(None))
        ).all()
    for job in pending.jobs:
        findings = [Classification(Code("", "", name), Code("", "", category)) for job_id, name, category in reported if job_id == job.job_id]
        if not findings:
            continue
        scored, _ = score_classifications(findings, expected)
        notes += [f"{job.pipeline}: no finding named {concept!r}" for concept in expected if concept not in scored]
        rows += [
            QualityScore(reference_id=pending.reference_id, job_id=job.job_id, pipeline=job.pipeline, pipeline_version=_version(job),
                         kind="classification", name=concept, predicted=values["predicted"], reference_value=values["reference"])
            for concept, values in scored.items()
        ]
    return rows, notes


def _scores(database: Database, pending: Pending) -> tuple[list[QualityScore], list[str]]:
    """Every job's scores against the reference, and notes of what did not pair up."""
    from pipelines.evaluation.cases import is_segmentation
    from pipelines.evaluation.reference import read_reference_seg
    from pipelines.evaluation.scoring import score_segments
    from pipelines.volume import load_series

    header = pydicom.dcmread(pending.reference_path)
    if not is_segmentation(header):
        return _finding_scores(database, pending, header)
    volume = load_series(pending.source_paths)
    references = read_reference_seg(header, volume)
    rows, notes = [], []
    for job in pending.jobs:
        if job.path is None:
            continue
        score = score_segments(volume, read_reference_seg(job.path, volume), references)
        notes += [f"{job.pipeline}: {note}" for note in score.unmatched]
        version = _version(job)
        for label, s in score.segments.items():
            rows.append(QualityScore(
                reference_id=pending.reference_id, job_id=job.job_id, pipeline=job.pipeline, pipeline_version=version,
                kind="segment", name=label, dice=s.dice, hd95_mm=s.hd95_mm, volume_ml=s.volume_ml,
                reference_volume_ml=s.reference_volume_ml,
            ))
    return rows, notes


def score_reference(database: Database, reference_id: int) -> str | None:
    """Score one pending reference; its new state (None if it was not pending)."""
    from pipelines.evaluation.reference import ReferenceError
    from pipelines.types import UnsupportedSeries

    pending = _pending(database, reference_id)
    if pending is None:
        return None
    if pending.reference_path is None or not pending.source_paths:
        _finish(database, reference_id, "failed", "the reference or the series it references is no longer stored", [])
        return "failed"
    if not pending.jobs:
        _finish(database, reference_id, "unmatched", f"series {pending.series_uid} has no succeeded job", [])
        return "unmatched"
    try:
        rows, notes = _scores(database, pending)
    except (ReferenceError, UnsupportedSeries, OSError, ValueError) as exc:
        log.warning("reference %s: cannot be scored: %s", reference_id, exc)
        _finish(database, reference_id, "failed", str(exc), [])
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a reference that breaks the scorer must not be retried forever
        log.exception("reference %s: scoring failed", reference_id)
        _finish(database, reference_id, "failed", f"{type(exc).__name__}: {exc}", [])
        return "failed"
    state = "scored" if rows else "unmatched"
    _finish(database, reference_id, state, "; ".join(notes) or None, rows)
    log.info("reference %s of series %s: %s (%d scores)", reference_id, pending.series_uid, state, len(rows))
    return state


def tick(settings: Settings, database: Database) -> int:
    """Score the references waiting to be scored; how many were."""
    with database.session() as session:
        waiting = session.scalars(
            select(QualityReference.id).where(QualityReference.state == "pending").order_by(QualityReference.id).limit(BATCH)
        ).all()
    return sum(score_reference(database, reference_id) is not None for reference_id in waiting)
