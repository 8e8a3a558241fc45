"""Read-only views of the index for the dashboard: plain dicts, so templates need no ORM session."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.db import (
    count_by_state,
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    NodeEvent,
    ResultObject,
    Series,
    Study,
    WorkerState,
    utcnow,
)
from node.queue.workers import holder_process, listing

WORKER_SEEN_WINDOW = dt.timedelta(minutes=10)


def stage_seconds(value: Any) -> float | None:
    """Seconds from one entry of ``Job.timings``: a number, or a mapping with ``seconds``/``duration``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        for key in ("seconds", "duration", "duration_s"):
            if isinstance(value.get(key), int | float):
                return float(value[key])
    return None


def job_stage_timings(job: Job) -> dict[str, float]:
    """The job's per-stage timings in seconds, plus ``total`` when start and finish are known."""
    timings = {
        str(stage): seconds
        for stage, raw in (job.timings or {}).items()
        if (seconds := stage_seconds(raw)) is not None
    }
    if job.started_at and job.finished_at and "total" not in timings:
        timings["total"] = max(0.0, (job.finished_at - job.started_at).total_seconds())
    return timings


def recent_series(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """Newest series first, with their study and a summary of their jobs."""
    rows = session.execute(
        select(Series, Study.accession_number)
        .join(Study, Study.study_uid == Series.study_uid)
        .order_by(Series.last_received_at.desc())
        .limit(limit)
    ).all()
    uids = [series.series_uid for series, _ in rows]
    job_states: dict[str, list[str]] = {}
    if uids:
        for series_uid, pipeline, state in session.execute(
            select(Job.series_uid, Job.pipeline, Job.state).where(Job.series_uid.in_(uids))
        ):
            job_states.setdefault(series_uid, []).append(f"{pipeline}: {state.value}")
    return [
        {
            "study_uid": series.study_uid,
            "accession_number": accession or "",
            "series_uid": series.series_uid,
            "modality": series.modality or "",
            "state": series.state.value,
            "state_reason": series.state_reason or "",
            "calling_ae_title": series.calling_ae_title or "",
            "instance_count": series.instance_count,
            "last_received_at": series.last_received_at,
            "completed_at": series.completed_at,
            "completed_by": series.completed_by.value if series.completed_by else "",
            "reopen_count": series.reopen_count or 0,
            "removed": series.removed_at is not None,
            "jobs": job_states.get(series.series_uid, []),
        }
        for series, accession in rows
    ]


def recent_jobs(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """Newest jobs first, with per-stage timings and the reason of a failure."""
    jobs = session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)).all()
    return [
        {
            "id": job.id,
            "series_uid": job.series_uid,
            "pipeline": job.pipeline,
            "state": job.state.value,
            "attempts": job.attempts,
            "worker": job.worker or "",
            "reason": job.reason or "",
            "timings": job_stage_timings(job),
            "created_at": job.created_at,
            "finished_at": job.finished_at,
        }
        for job in jobs
    ]


def recent_deliveries(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """Newest deliveries first, with attempts, last status and error."""
    rows = session.execute(
        select(Delivery, ResultObject, Job.series_uid)
        .join(ResultObject, ResultObject.id == Delivery.result_id)
        .join(Job, Job.id == ResultObject.job_id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "id": delivery.id,
            "destination": delivery.destination,
            "kind": result.kind,
            "series_uid": source_series,
            "state": delivery.state.value,
            "attempts": delivery.attempts,
            "last_status": delivery.last_status or "",
            "error": delivery.error or "",
            "next_attempt_at": delivery.next_attempt_at,
            "delivered_at": delivery.delivered_at,
        }
        for delivery, result, source_series in rows
    ]


def recent_results(session: Session, limit: int = 12) -> list[dict[str, Any]]:
    """Newest result objects first; SEG results still stored get a preview image on the dashboard."""
    rows = session.execute(
        select(ResultObject, Job.pipeline, Job.series_uid, Series.removed_at)
        .join(Job, Job.id == ResultObject.job_id)
        .join(Series, Series.series_uid == Job.series_uid)
        .order_by(ResultObject.created_at.desc(), ResultObject.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "id": result.id,
            "kind": result.kind,
            "pipeline": pipeline,
            "source_series_uid": source_series,
            "sop_instance_uid": result.sop_instance_uid,
            "created_at": result.created_at,
            "previewable": result.kind == "seg" and removed_at is None,
        }
        for result, pipeline, source_series, removed_at in rows
    ]


def workers(session: Session, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Worker processes with their state (alive, dead, stopped: node.queue.workers), then holders of jobs seen in
    job heartbeats that never registered (a worker of an older release), newest first."""
    now = now or utcnow()
    listed = listing(session, now)
    for worker in listed:
        worker["recent"] = worker["state"] == WorkerState.alive.value
    known = {worker["name"] for worker in listed}
    last_seen = func.max(func.coalesce(Job.heartbeat_at, Job.finished_at, Job.started_at))
    rows = session.execute(
        select(Job.worker, last_seen, func.count()).where(Job.worker.is_not(None)).group_by(Job.worker)
    ).all()
    unregistered = []
    for worker, seen, count in rows:
        if seen is None or holder_process(worker) in known:
            continue
        recent = now - seen <= WORKER_SEEN_WINDOW
        unregistered.append({"name": worker, "host": worker.partition(":")[0], "queues": "", "reason": "",
                             "state": "seen" if recent else "not seen recently", "last_seen": seen, "jobs": count,
                             "recent": recent})
    return listed + sorted(unregistered, key=lambda w: w["last_seen"], reverse=True)


def queue_summary(session: Session) -> dict[str, Any]:
    jobs = count_by_state(session, Job.state)
    deliveries = count_by_state(session, Delivery.state)
    return {
        "jobs": {state.value: jobs.get(state.value, 0) for state in JobState},
        "deliveries": {state.value: deliveries.get(state.value, 0) for state in DeliveryState},
        "depth": jobs.get(JobState.queued.value, 0) + jobs.get(JobState.retrying.value, 0),
        "outbox": deliveries.get(DeliveryState.pending.value, 0) + deliveries.get(DeliveryState.sending.value, 0),
    }


def recent_events(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    events = session.scalars(select(NodeEvent).order_by(NodeEvent.at.desc(), NodeEvent.id.desc()).limit(limit))
    return [
        {"at": e.at, "level": e.level, "kind": e.kind, "message": e.message, "ae": e.calling_ae_title or "", "uid": e.uid or ""}
        for e in events
    ]


def recent_audit(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    events = session.scalars(select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit))
    return [
        {
            "at": e.at,
            "event": e.event,
            "outcome": e.outcome,
            "source": f"{e.source_ae_title or '-'}@{e.source_host or '-'}",
            "destination": f"{e.destination_ae_title or '-'}@{e.destination_host or '-'}",
            "study_uid": e.study_uid or "",
            "instances": e.instance_count,
            "detail": e.detail or "",
        }
        for e in events
    ]
