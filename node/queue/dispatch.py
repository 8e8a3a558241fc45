"""Dispatch: complete series become jobs (database first), then Celery messages carrying only job IDs.

One job per (series, pipeline): a series that is reopened and completes again resets its jobs to queued
instead of adding rows. Retrying jobs are enqueued here once their backoff has passed.
"""

from __future__ import annotations

import logging

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Database, Instance, Job, JobState, Series, SeriesState, get_or_add, record_event, utcnow
from node.queue.celery_app import RUN_JOB_TASK, send
from node.routing import RoutingDecision, route_series

log = logging.getLogger(__name__)

BATCH = 100


def _read_header(path: str | None) -> pydicom.Dataset | str:
    """A series' first instance header, or the reason it cannot be read."""
    if path is None:
        return "the series has no stored instances"
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as exc:
        return f"its first instance cannot be read: {exc}"


def _first_paths(database: Database, series_uids: list[str]) -> dict[str, str]:
    with database.session() as session:
        rows = session.execute(
            select(Instance.series_uid, func.min(Instance.path))
            .where(Instance.series_uid.in_(series_uids))
            .group_by(Instance.series_uid)
        ).all()
    return {uid: path for uid, path in rows}


def _save_jobs(session: Session, series: Series, decision: RoutingDecision) -> list[int]:
    now, job_ids = utcnow(), []
    for pipeline, routes in decision.pipelines.items():
        job = get_or_add(session, Job, series_uid=series.series_uid, pipeline=pipeline)
        job.routes, job.destinations = routes, decision.destinations.get(pipeline, [])
        job.state, job.reason, job.attempts, job.worker = JobState.queued, None, 0, None
        job.queued_at, job.started_at, job.heartbeat_at, job.finished_at = now, None, None, None
        job.timings = {}
        session.flush()
        job_ids.append(job.id)
    return job_ids


def _leave_complete(session: Session, series_uid: str, state: SeriesState, reason: str | None) -> bool:
    """Move a series out of `complete`, unless a late instance reopened it meanwhile (then it is routed later)."""
    moved = session.execute(
        update(Series)
        .where(Series.series_uid == series_uid, Series.state == SeriesState.complete)
        .values(state=state, state_reason=reason)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        log.info("series %s: reopened by a late instance while routing; routing it when it completes again", series_uid)
    return bool(moved)


def _route(settings: Settings, session: Session, series: Series, header: pydicom.Dataset | str) -> list[int]:
    series_uid = series.series_uid
    if isinstance(header, str):
        decision, reason = None, f"cannot route: {header}"
    else:
        decision = route_series(settings.routes, header, series.called_ae_title, series.calling_ae_title)
        reason = None if decision.pipelines else decision.unrouted_reason()
    if decision is None or not decision.pipelines:
        if not _leave_complete(session, series_uid, SeriesState.unrouted, reason):
            return []
        record_event(session, "unrouted", f"series {series_uid}: {reason}", level="info", uid=series_uid)
        log.info("series %s: unrouted: %s", series_uid, reason)
        return []
    routes = "routes: " + ", ".join(v.route.name for v in decision.matched)
    if not _leave_complete(session, series_uid, SeriesState.routed, routes):
        return []
    job_ids = _save_jobs(session, series, decision)
    log.info("series %s: routed to %s (jobs %s)", series_uid, sorted(decision.pipelines), job_ids)
    return job_ids


def route_complete(settings: Settings, database: Database, series_uids: list[str]) -> list[int]:
    """Route complete series in one transaction: their jobs, or why they are unrouted; the job IDs to enqueue."""
    paths = _first_paths(database, series_uids)
    headers = {uid: _read_header(paths.get(uid)) for uid in series_uids}
    job_ids: list[int] = []
    with database.session() as session:
        for series_uid in series_uids:
            series = session.get(Series, series_uid)
            if series is not None and series.state == SeriesState.complete:
                job_ids.extend(_route(settings, session, series, headers[series_uid]))
    return job_ids


def enqueue_many(settings: Settings, database: Database, job_ids: list[int]) -> list[int]:
    """Send the jobs' messages and record their task IDs; jobs the broker refused stay queued for the reconciler."""
    sent: dict[int, str] = {}
    for job_id in job_ids:
        try:
            sent[job_id] = send(settings, RUN_JOB_TASK, job_id)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the reconciler re-enqueues later
            log.warning("job %s: could not reach the broker (%s); the reconciler will re-enqueue it", job_id, exc)
    if sent:
        with database.session() as session:
            for job_id, task_id in sent.items():
                session.execute(update(Job).where(Job.id == job_id).values(celery_task_id=task_id))
    return list(sent)


def enqueue(settings: Settings, database: Database, job_id: int) -> bool:
    """Send job ``job_id``'s message; False (and the job stays queued for the reconciler) if the broker fails."""
    return bool(enqueue_many(settings, database, [job_id]))


def enqueue_due_retries(settings: Settings, database: Database) -> list[int]:
    """Move retrying jobs whose backoff has passed back to queued and send their messages."""
    now = utcnow()
    with database.session() as session:
        due = session.scalars(
            select(Job.id).where(Job.state == JobState.retrying, Job.queued_at <= now).limit(BATCH)
        ).all()
        taken = [
            job_id
            for job_id in due
            if session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.retrying)
                .values(state=JobState.queued, queued_at=now)
            ).rowcount
        ]
    enqueue_many(settings, database, taken)
    return taken


def tick(settings: Settings, database: Database) -> None:
    """Route every complete series and enqueue its jobs; enqueue retries that are due."""
    with database.session() as session:
        complete = session.scalars(
            select(Series.series_uid)
            .where(Series.state == SeriesState.complete)
            .order_by(Series.completed_at)
            .limit(BATCH)
        ).all()
    if complete:
        enqueue_many(settings, database, route_complete(settings, database, list(complete)))
    enqueue_due_retries(settings, database)


def rerun(settings: Settings, database: Database, job_id: int) -> bool:
    """Run a finished job again when asked (its results are replaced, not duplicated); False if it is running."""
    with database.session() as session:
        reset = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.in_([JobState.succeeded, JobState.failed, JobState.retrying]))
            .values(state=JobState.queued, reason=None, attempts=0, worker=None, queued_at=utcnow(), finished_at=None)
        ).rowcount
    if reset:
        log.info("job %s: re-run requested", job_id)
        enqueue(settings, database, job_id)
    return bool(reset)
