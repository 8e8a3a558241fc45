"""Dispatch: complete series become jobs (database first), then Celery messages carrying only job IDs.

One job per (series, pipeline): a series that is reopened and completes again resets its jobs to queued
instead of adding rows. Routes with ``inputs`` make one job per study instead (``node.jobs.study``); a series
that is only such an input is recorded as routed to them. Retrying jobs are enqueued here once their backoff
has passed.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import pydicom
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Database, Job, JobState, Series, SeriesState, record_event, utcnow
from node.quality.recognise import recognise_reference
from node.queue.celery_app import RUN_JOB_TASK, send_many
from node.route.rules import RoutingDecision, instance_level_keywords, route_series
from node.route.study import StudySeries, study_inputs
from node.jobs.headers import series_headers
from node.jobs.study import expire_waiting, route_studies, waiting_studies

log = logging.getLogger(__name__)

BATCH = 100


JobKey = tuple[str, str]
"""(series UID, pipeline): a job's identity."""


def _save_jobs(session: Session, series: Series, decision: RoutingDecision, existing: dict[JobKey, Job]) -> list[Job]:
    """The series' jobs, reset to queued (a series completed again) or added; IDs come with the next flush."""
    now, jobs = utcnow(), []
    for pipeline, routes in decision.pipelines.items():
        job = existing.get((series.series_uid, pipeline))
        if job is None:
            job = Job(series_uid=series.series_uid, pipeline=pipeline)
            session.add(job)
        job.routes, job.destinations = routes, decision.destinations.get(pipeline, [])
        job.state, job.reason, job.attempts, job.worker = JobState.queued, None, 0, None
        job.queued_at, job.started_at, job.heartbeat_at, job.finished_at = now, None, None, None
        job.timings = {}
        jobs.append(job)
    return jobs


SeriesOutcome = tuple[SeriesState, str | None, RoutingDecision | None]
"""Where a complete series goes: routed (with its decision) or unrouted, and the reason recorded with it."""


def _decide(settings: Settings, series: Series, header: pydicom.Dataset | str) -> SeriesOutcome:
    if isinstance(header, str):
        return SeriesState.unrouted, f"cannot route: {header}", None
    decision = route_series(settings.routes, header, series.called_ae_title, series.calling_ae_title)
    if not decision.pipelines:
        inputs = study_inputs(settings.routes, StudySeries(series.series_uid, header, series.called_ae_title,
                                                           series.calling_ae_title))
        if inputs:  # its jobs are made per study, once the study's inputs are there
            return SeriesState.routed, "study routes: " + ", ".join(inputs), None
        return SeriesState.unrouted, decision.unrouted_reason(), None
    return SeriesState.routed, "routes: " + ", ".join(v.route.name for v in decision.matched), decision


def _reference(session: Session, settings: Settings, series: Series, header: pydicom.Dataset | str) -> SeriesOutcome | None:
    """A foreign SEG of a processed series is scored by quality monitoring rather than routed."""
    return None if isinstance(header, str) else recognise_reference(session, settings.quality, series, header)


def _leave_complete(session: Session, moves: dict[str, tuple[SeriesState, str | None]]) -> set[str]:
    """Move series out of `complete`, each by compare-and-set; the UIDs moved.

    A series a late instance reopened meanwhile stays as it is and is routed when it completes again.
    Series with the same new state and reason move in one statement where the database returns the rows
    it updated.
    """
    groups: dict[tuple[SeriesState, str | None], list[str]] = defaultdict(list)
    for series_uid, move in moves.items():
        groups[move].append(series_uid)
    returning = session.get_bind().dialect.update_returning
    moved: set[str] = set()
    for (state, reason), uids in groups.items():
        leave = (
            update(Series)
            .where(Series.state == SeriesState.complete)
            .values(state=state, state_reason=reason)
            .execution_options(synchronize_session=False)
        )
        if returning:
            moved.update(session.scalars(leave.where(Series.series_uid.in_(uids)).returning(Series.series_uid)))
        else:
            moved.update(uid for uid in uids if session.execute(leave.where(Series.series_uid == uid)).rowcount)
    for series_uid in moves.keys() - moved:
        log.info("series %s: reopened by a late instance while routing; routing it when it completes again", series_uid)
    return moved


def route_complete(settings: Settings, database: Database, series_uids: list[str]) -> list[int]:
    """Route complete series in one transaction: their jobs, or why they are unrouted; the job IDs to enqueue."""
    headers = series_headers(database, series_uids, instance_level_keywords(settings.routes))
    routed: list[tuple[str, list[Job]]] = []
    with database.session() as session:
        complete = {
            series.series_uid: series
            for series in session.scalars(
                select(Series).where(Series.series_uid.in_(series_uids), Series.state == SeriesState.complete)
            )
        }
        existing = {
            (job.series_uid, job.pipeline): job
            for job in session.scalars(select(Job).where(Job.series_uid.in_(list(complete))))
        }
        outcomes = {
            uid: _reference(session, settings, complete[uid], headers[uid]) or _decide(settings, complete[uid], headers[uid])
            for uid in series_uids
            if uid in complete
        }
        moved = _leave_complete(session, {uid: (state, reason) for uid, (state, reason, _) in outcomes.items()})
        for series_uid, (state, reason, decision) in outcomes.items():
            if series_uid not in moved or state == SeriesState.reference:
                continue
            if decision is None and outcomes[series_uid][0] == SeriesState.routed:
                log.info("series %s: %s", series_uid, reason)
            elif decision is None:
                record_event(session, "unrouted", f"series {series_uid}: {reason}", level="info", uid=series_uid)
                log.info("series %s: unrouted: %s", series_uid, reason)
            else:
                routed.append((series_uid, _save_jobs(session, complete[series_uid], decision, existing)))
        session.flush()  # one INSERT for all new jobs: their IDs
    for series_uid, jobs in routed:
        log.info("series %s: routed to %s (jobs %s)", series_uid, sorted(j.pipeline for j in jobs), [j.id for j in jobs])
    return [job.id for _, jobs in routed for job in jobs]


def enqueue_many(settings: Settings, database: Database, job_ids: list[int]) -> list[int]:
    """Send the jobs' messages in one batch and record their task IDs; if the broker fails, they stay queued.

    A failed batch may have delivered some messages; the reconciler re-enqueues the jobs only once the
    queue is empty, and a duplicate message finds its job taken or done.
    """
    if not job_ids:
        return []
    try:
        task_ids = send_many(settings, RUN_JOB_TASK, [(job_id,) for job_id in job_ids])
    except Exception as exc:  # noqa: BLE001 - the broker is down: the reconciler re-enqueues later
        log.warning("jobs %s: could not reach the broker (%s); the reconciler will re-enqueue them", job_ids, exc)
        return []
    with database.session() as session:
        session.execute(update(Job), [{"id": j, "celery_task_id": t} for j, t in zip(job_ids, task_ids)])
    return list(job_ids)


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
    """Route every complete series and enqueue its jobs, then the study-level jobs of their studies and of
    studies still waiting for inputs; enqueue retries that are due."""
    with database.session() as session:
        complete = session.execute(
            select(Series.series_uid, Series.study_uid)
            .where(Series.state == SeriesState.complete)
            .order_by(Series.completed_at)
            .limit(BATCH)
        ).all()
    if complete:
        enqueue_many(settings, database, route_complete(settings, database, [uid for uid, _ in complete]))
    if any(route.inputs for route in settings.routes):
        studies = {study for _, study in complete} | waiting_studies(database)
        enqueue_many(settings, database, route_studies(settings, database, studies))
        expire_waiting(settings, database)
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
