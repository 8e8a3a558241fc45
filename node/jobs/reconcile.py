"""The reconciler: the database is the source of truth, so jobs whose messages or workers vanished recover.

* A running job whose heartbeat is older than ``queue.job_timeout_seconds`` lost its worker: it is retried
  (or failed once ``queue.max_job_attempts`` are used up).
* A queued job older than ``queue.requeue_after_seconds`` while its broker queue is empty lost its message
  (the broker restarted or was flushed): it is enqueued again. A duplicate message is harmless, since a job
  runs only under its lease.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update

from node.config import Settings
from node.db import Database, Job, JobState, record_event, utcnow
from node.queue.celery_app import GPU_QUEUE, queue_depth
from node.jobs.dispatch import BATCH, enqueue_many

log = logging.getLogger(__name__)


def time_out_silent_jobs(settings: Settings, database: Database) -> list[int]:
    """Retry or fail running jobs whose worker stopped sending heartbeats."""
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=settings.queue.job_timeout_seconds)
    changed = []
    with database.session() as session:
        silent = session.scalars(
            select(Job).where(Job.state == JobState.running, Job.heartbeat_at < cutoff).limit(BATCH)
        ).all()
        for job in silent:
            reason = f"worker {job.worker} gave no heartbeat for {settings.queue.job_timeout_seconds:g} s"
            if job.attempts >= settings.queue.max_job_attempts:
                values = {"state": JobState.failed, "reason": f"timed out after {job.attempts} attempts: {reason}"}
                values["finished_at"] = now
            else:
                values = {"state": JobState.retrying, "reason": reason, "queued_at": now}
            done = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.state == JobState.running, Job.worker == job.worker)
                .values(**values)
            ).rowcount
            if done:
                changed.append(job.id)
                record_event(session, "job-timeout", f"job {job.id}: {values['reason']}", uid=job.series_uid)
                log.warning("job %s: %s; now %s", job.id, reason, values["state"].value)
    return changed


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
    time_out_silent_jobs(settings, database)
    requeue_lost_messages(settings, database)
