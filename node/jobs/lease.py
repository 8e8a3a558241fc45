"""Job leases: a worker takes a job under its identity and keeps it alive with heartbeats.

A job is taken with an atomic compare-and-set (``claim``), so two workers never run the same job at once; a
stale run that lost its lease cannot record an outcome (every write is guarded by ``holds``). The identity
``host:pid:token`` also serves the outbox, whose sending rows are leased the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, bindparam, or_, update

from node.config import Settings
from node.db import Database, Job, JobState, utcnow
from node.jobs.results import series_paths
from node.queue.workers import HOSTNAME, holder_process, process_identity

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Lease:
    """A job taken by one worker for one attempt, with what the run needs to know of it."""

    job_id: int
    worker: str
    attempt: int
    pipeline: str
    series_uid: str
    queued_at: dt.datetime | None
    started_at: dt.datetime
    paths: tuple[Path, ...]
    inputs: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    """A study-level job's input series' files, by input name (the reference's are ``paths`` too)."""
    reference: str = ""


def _inputs(connection, recorded: dict | None) -> tuple[dict[str, tuple[Path, ...]], str]:  # type: ignore[no-untyped-def]
    """The files of a study-level job's inputs, from what ``Job.inputs`` records."""
    if not recorded:
        return {}, ""
    series = recorded.get("series", {})
    return {name: series_paths(connection, uid) for name, uid in series.items()}, str(recorded.get("reference", ""))


def worker_identity() -> str:
    """``host:pid:token:claim``: who holds a job (or a delivery). Its first three parts are the worker process's
    identity in ``workers`` (node.queue.workers), so the reconciler takes back what a dead worker held; the
    pid lets a worker on the same host see a dead holder at once."""
    return f"{process_identity()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(worker: str | None) -> bool:
    """True when ``worker`` holds nothing, or is a process of this host that no longer exists."""
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_text = rest.partition(":")[0]
    if host != HOSTNAME or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _orphaned_here(job_id: int, worker: str | None) -> bool:
    """True when this very process holds the job but runs it no more (its task is retried after an error)."""
    return holder_process(worker) == process_identity() and not Heartbeat.running(job_id)


_TAKE_WAITING = (
    update(Job)
    .where(
        Job.id == bindparam("job_id"),
        or_(
            Job.state.in_([JobState.queued, JobState.retrying]),
            and_(
                Job.state == JobState.running,
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < bindparam("stale_before")),
            ),
        ),
    )
    .values(
        state=JobState.running,
        worker=bindparam("holder"),
        attempts=Job.attempts + 1,
        started_at=bindparam("taken_at"),
        heartbeat_at=bindparam("taken_at"),
        finished_at=None,
    )
    .returning(Job.attempts, Job.pipeline, Job.series_uid, Job.queued_at, Job.inputs)
)
"""Take a waiting job, or one whose holder went silent, in one atomic statement (the common case of claim)."""

def claim(settings: Settings, database: Database, job_id: int) -> Lease | None:
    """Take the job if it is waiting, or running under a dead or silent holder; None if it is not ours."""
    stale_before = utcnow() - dt.timedelta(seconds=settings.queue.job_timeout_seconds)
    if database.engine.dialect.update_returning:
        worker, now = worker_identity(), utcnow()
        with database.engine.begin() as connection:
            row = connection.execute(
                _TAKE_WAITING, {"job_id": job_id, "stale_before": stale_before, "holder": worker, "taken_at": now}
            ).first()
            if row is not None:
                attempt, pipeline, series_uid, queued_at, recorded = row
                return Lease(job_id, worker, attempt, pipeline, series_uid, queued_at, now,
                             series_paths(connection, series_uid), *_inputs(connection, recorded))
    return _claim_by_inspection(database, job_id, stale_before)


def _claim_by_inspection(database: Database, job_id: int, stale_before: dt.datetime) -> Lease | None:
    """Read the job, say why it is not ours, or take it (a dead holder on this host) by compare-and-set."""
    with database.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            log.warning("job %s: no such job; message dropped", job_id)
            return None
        if job.state == JobState.running:
            silent = job.heartbeat_at is None or job.heartbeat_at < stale_before
            if not (silent or holder_is_dead(job.worker) or _orphaned_here(job.id, job.worker)):
                log.info("job %s: already running on %s; duplicate message dropped", job_id, job.worker)
                return None
        elif job.state not in (JobState.queued, JobState.retrying):
            log.info("job %s: already %s; duplicate message dropped", job_id, job.state.value)
            return None
        worker, now, seen_state, attempt = worker_identity(), utcnow(), job.state, job.attempts + 1
        pipeline, series_uid, queued_at, recorded = job.pipeline, job.series_uid, job.queued_at, job.inputs
        taken = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == seen_state, Job.attempts == attempt - 1)
            .values(
                state=JobState.running,
                worker=worker,
                attempts=Job.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            log.info("job %s: taken by another worker first", job_id)
            return None
        return Lease(job_id, worker, attempt, pipeline, series_uid, queued_at, now, series_paths(session, series_uid),
                     *_inputs(session, recorded))


def holds(lease: Lease):  # type: ignore[no-untyped-def]
    """The conditions under which ``lease`` is still held: every write of a run is guarded by them."""
    return (Job.id == lease.job_id, Job.state == JobState.running, Job.worker == lease.worker)


class Heartbeat:
    """Refreshes the job's heartbeat while it runs, so the reconciler knows the worker is alive.

    One beating thread per process serves every job it runs: starting a thread per job costs more than
    a no-op job itself.
    """

    _lock = threading.Lock()
    _active: dict[int, "Heartbeat"] = {}
    _thread: tuple[int, threading.Thread] | None = None

    def __init__(self, database: Database, lease: Lease, period: float) -> None:
        self._database, self._lease, self._period = database, lease, period
        self._due = time.monotonic() + period
        self.lost = False

    def __enter__(self) -> "Heartbeat":
        with Heartbeat._lock:
            Heartbeat._active[self._lease.job_id] = self
            if Heartbeat._thread is None or Heartbeat._thread[0] != os.getpid():  # none yet in this (forked) process
                thread = threading.Thread(target=Heartbeat._run_forever, name="job-heartbeat", daemon=True)
                Heartbeat._thread = (os.getpid(), thread)
                thread.start()
        return self

    @staticmethod
    def running(job_id: int) -> bool:
        """Whether this process is running job ``job_id`` now."""
        with Heartbeat._lock:
            return job_id in Heartbeat._active and Heartbeat._thread is not None and Heartbeat._thread[0] == os.getpid()

    def __exit__(self, *exc: object) -> None:
        with Heartbeat._lock:
            Heartbeat._active.pop(self._lease.job_id, None)

    @staticmethod
    def _run_forever() -> None:
        while True:
            time.sleep(0.05)
            with Heartbeat._lock:
                due = [beat for beat in Heartbeat._active.values() if beat._due <= time.monotonic()]
            for beat in due:
                beat._beat()

    def _beat(self) -> None:
        self._due = time.monotonic() + self._period
        try:
            with self._database.engine.begin() as connection:
                held = connection.execute(update(Job).where(*holds(self._lease)).values(heartbeat_at=utcnow())).rowcount
        except Exception:  # noqa: BLE001 - a missed beat is retried on the next period
            log.warning("job %s: heartbeat failed; retrying", self._lease.job_id, exc_info=True)
            return
        if not held and not self.lost:
            log.warning("job %s: lease lost (the job was reset or timed out)", self._lease.job_id)
            self.lost = True
