"""Study-level jobs: one job per (study, pipeline) of a route with ``inputs``, on several series of the study.

When a series of a study completes, the study's study-level routes are decided again over all of its series
that are no longer being received (:mod:`node.route.study`). With every input found and no series of the
study still arriving, the job is queued with its inputs (``Job.inputs``); otherwise it is ``waiting``, its
reason naming what it waits for. A waiting job whose study has been quiet for ``node.study_quiet_seconds``
fails, naming the missing inputs; a series arriving later decides the study again and queues the job.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.config import RouteConfig, Settings
from node.db import Database, Job, JobState, Series, SeriesState, record_event, utcnow
from node.jobs.headers import first_paths, read_header
from node.route.study import StudyDecision, StudySeries, decide_study, study_routes

log = logging.getLogger(__name__)


def _study_series(database: Database, study_uids: set[str]) -> tuple[dict[str, list[StudySeries]], set[str]]:
    """The readable series of each study no longer being received, and the studies with a series still arriving."""
    with database.session() as session:
        rows = session.execute(
            select(Series.series_uid, Series.study_uid, Series.state, Series.called_ae_title, Series.calling_ae_title)
            .where(Series.study_uid.in_(study_uids), Series.removed_at.is_(None))
        ).all()
    arriving = {row.study_uid for row in rows if row.state in (SeriesState.receiving, SeriesState.complete)}
    settled = [row for row in rows if row.state not in (SeriesState.receiving, SeriesState.complete)]
    paths = first_paths(database, [row.series_uid for row in settled]) if settled else {}
    by_study: dict[str, list[StudySeries]] = defaultdict(list)
    for row in settled:
        header = read_header(paths.get(row.series_uid))
        if not isinstance(header, str):
            by_study[row.study_uid].append(StudySeries(row.series_uid, header, row.called_ae_title, row.calling_ae_title))
    return by_study, arriving


def _study_job(session: Session, study_uid: str, pipeline: str) -> Job | None:
    return session.scalars(
        select(Job).join(Series, Job.series_uid == Series.series_uid)
        .where(Series.study_uid == study_uid, Job.pipeline == pipeline, Job.inputs.is_not(None))
    ).first()


def _file_job(session: Session, job: Job | None, route: RouteConfig, pipeline: str, decision: StudyDecision,
              arriving: bool) -> Job | None:
    """Add or update the study's job for ``pipeline``; the job when it is to be queued now, else None."""
    inputs, anchor = decision.job_inputs(), decision.anchor
    ready = decision.complete and not arriving
    if job is not None and job.inputs == inputs and job.series_uid == anchor and job.state != JobState.waiting:
        return None  # these inputs are queued, running or done already
    if job is None:
        clash = session.scalars(select(Job).where(Job.series_uid == anchor, Job.pipeline == pipeline)).first()
        if clash is not None:
            log.warning("study route %s: series %s already has a %s job of its own; no study job", route.name, anchor,
                        pipeline)
            return None
        job = Job(series_uid=anchor, pipeline=pipeline)
        session.add(job)
    job.series_uid, job.inputs, job.routes, job.destinations = anchor, inputs, [route.name], list(route.destinations)
    job.attempts, job.worker, job.timings = 0, None, {}
    job.queued_at, job.started_at, job.heartbeat_at, job.finished_at = utcnow(), None, None, None
    if ready:
        job.state, job.reason = JobState.queued, None
        return job
    job.state = JobState.waiting
    job.reason = f"waiting for the study's inputs: {decision.missing_reason()}" if decision.missing \
        else "waiting for series of the study still being received"
    return None


def route_studies(settings: Settings, database: Database, study_uids: set[str]) -> list[int]:
    """Decide the study-level routes of these studies; the IDs of the jobs now ready to enqueue."""
    if not study_uids or not any(route.inputs for route in settings.routes):
        return []
    by_study, arriving = _study_series(database, study_uids)
    ready: list[Job] = []
    with database.session() as session:
        for study_uid, series in by_study.items():
            routes = {route.name: route for item in series for route in study_routes(settings.routes, item.called_ae)}
            for route in routes.values():
                decision = decide_study(route, series)
                if decision is None:
                    continue
                for pipeline in route.pipelines:
                    job = _file_job(session, _study_job(session, study_uid, pipeline), route, pipeline, decision,
                                    study_uid in arriving)
                    if job is not None:
                        ready.append(job)
        session.flush()
        ids = [job.id for job in ready]
    for job_id in ids:
        log.info("study job %s: all inputs there; queued", job_id)
    return ids


def waiting_studies(database: Database) -> set[str]:
    """The studies that have a study-level job waiting for inputs."""
    with database.session() as session:
        return set(session.scalars(
            select(Series.study_uid).join(Job, Job.series_uid == Series.series_uid).where(Job.state == JobState.waiting)
        ))


def expire_waiting(settings: Settings, database: Database) -> list[int]:
    """Fail the waiting jobs of studies quiet for ``node.study_quiet_seconds``, naming what is missing."""
    cutoff = utcnow() - dt.timedelta(seconds=settings.node.study_quiet_seconds)
    with database.session() as session:
        last = (select(Series.study_uid, func.max(Series.last_received_at).label("last"))
                .group_by(Series.study_uid).subquery())
        quiet = session.execute(
            select(Job, Series.study_uid).join(Series, Job.series_uid == Series.series_uid)
            .join(last, last.c.study_uid == Series.study_uid)
            .where(Job.state == JobState.waiting, last.c.last < cutoff)
        ).all()
        failed = []
        for job, study_uid in quiet:
            missing = (job.reason or "").removeprefix("waiting for the study's inputs: ")
            job.state, job.finished_at = JobState.failed, utcnow()
            job.reason = f"the study has been complete for {settings.node.study_quiet_seconds:g} s without every " \
                         f"input: {missing}"
            record_event(session, "job", f"job {job.id}: {job.reason}", level="warning", uid=study_uid)
            failed.append(job.id)
    for job_id in failed:
        log.warning("study job %s: failed: inputs missing", job_id)
    return failed
