"""The reconciler: the database is the source of truth, so jobs whose messages or workers vanished recover.

* A worker process silent for ``queue.worker_dead_after_seconds`` is judged dead, on whatever host it ran
  (node.queue.workers): the jobs it was running are retried at once (or failed once ``queue.max_job_attempts``
  are used up), under new leases, so its own runs can no longer record anything.
* A running job whose heartbeat is older than ``queue.job_timeout_seconds`` made no progress under a live
  worker: it is retried (or failed) the same way.
* A queued job older than ``queue.requeue_after_seconds`` while its broker queue is empty lost its message
  (the broker restarted or was flushed): it is enqueued again. A duplicate message is harmless, since a job
  runs only under its lease.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Database, Job, JobState, record_event, utcnow
from node.queue.celery_app import GPU_QUEUE, queue_depth
from node.jobs.dispatch import BATCH, enqueue_many
from node.queue.workers import dead_among, holder_process, judge_silent

log = logging.getLogger(__name__)


def _take_back(settings: Settings, session: Session, job: Job, reason: str, kind: str, now: dt.datetime,
               gave_up: str = "gave up") -> bool:
    """Retry (or fail, once its attempts are used up) a running job still held by ``job.worker``.

    The job leaves ``running``, so its old holder's lease no longer holds: a run that carries on there cannot
    record its outcome, and the next attempt runs under a new lease.
    """
    if job.attempts >= settings.queue.max_job_attempts:
        values = {"state": JobState.failed, "reason": f"{gave_up} after {job.attempts} attempts: {reason}",
                  "finished_at": now}
    else:
        values = {"state": JobState.retrying, "reason": reason, "queued_at": now}
    done = session.execute(
        update(Job).where(Job.id == job.id, Job.state == JobState.running, Job.worker == job.worker).values(**values)
    ).rowcount
    if done:
        record_event(session, kind, f"job {job.id}: {values['reason']}", uid=job.series_uid)
        log.warning("job %s: %s; now %s", job.id, reason, values["state"].value)
    return bool(done)


def time_out_silent_jobs(settings: Settings, database: Database) -> list[int]:
    """Retry or fail running jobs that made no progress (no heartbeat) for ``queue.job_timeout_seconds``."""
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=settings.queue.job_timeout_seconds)
    with database.session() as session:
        silent = session.scalars(
            select(Job).where(Job.state == JobState.running, Job.heartbeat_at < cutoff).limit(BATCH)
        ).all()
        reason = "worker {} gave no heartbeat for {:g} s"
        return [job.id for job in silent if _take_back(
            settings, session, job, reason.format(job.worker, settings.queue.job_timeout_seconds), "job-timeout", now,
            "timed out")]


def take_back_from_dead_workers(settings: Settings, database: Database) -> list[int]:
    """Judge silent worker processes dead (on any host) and retry the jobs they were running, at once."""
    judge_silent(settings, database)
    with database.session() as session:
        running = session.scalars(select(Job).where(Job.state == JobState.running).limit(BATCH)).all()
        dead = dead_among(database, [job.worker for job in running])
        now = utcnow()
        return [job.id for job in running if job.worker in dead and _take_back(
            settings, session, job, f"its worker {holder_process(job.worker)} died", "job-worker-dead", now)]


def requeue_lost_messages(settings: Settings, database: Database) -> list[int]:
    """Enqueue again queued jobs whose message is gone; only when the queue is empty, to avoid duplicates."""
    cutoff = utcnow() - dt.timedelta(seconds=settings.queue.requeue_after_seconds)
    with database.session() as session:
        waiting = session.scalars(
            select(Job.id).where(Job.state == JobState.queued, Job.queued_at < cutoff).order_by(Job.id).limit(BATCH)
        ).all()
    if not waiting or queue_depth(settings, GPU_QUEUE) > 0:
        return []
    now = utcnow()
    with database.session() as session:
        touched = [
            job_id
            for job_id in waiting
            if session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.queued).values(queued_at=now)
            ).rowcount
        ]
    requeued = enqueue_many(settings, database, touched)
    if requeued:
        log.warning("re-enqueued %d job(s) whose messages were lost: %s", len(requeued), requeued)
    return requeued


def tick(settings: Settings, database: Database) -> None:
    """One reconciliation pass over the job table (retries that fall due are the dispatcher's: it runs every 50 ms)."""
    take_back_from_dead_workers(settings, database)
    time_out_silent_jobs(settings, database)
    requeue_lost_messages(settings, database)
