"""Run one job: claim it, load its series, run its pipeline, write and register its results.

A job is taken under a lease (``Job.worker`` plus a heartbeat) with an atomic compare-and-set, so two
workers never run the same job at once; a stale run that lost its lease cannot mark the job done. Permanent
problems (unreadable series, unsupported data, a pipeline that declines the series) fail the job at once;
other errors are retried with backoff until ``queue.max_job_attempts``.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import Connection, and_, bindparam, or_, select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Database, Instance, Job, JobState, ResultObject, get_or_add, utcnow
from node.quality.observe import Observation, observe, record_refusal, record_run
from pipelines.types import UnsupportedSeries

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()


class Outcome(str, enum.Enum):
    succeeded = "succeeded"
    failed = "failed"
    retrying = "retrying"
    skipped = "skipped"  # the job was not ours to run (done, or running elsewhere)
    lost = "lost"  # our lease was taken over while we ran; our result was discarded


class PermanentJobError(Exception):
    """The job can never succeed as it stands; the message says why."""


class SeriesRefused(PermanentJobError):
    """The pipeline declines the series or finds it unsupported; quality monitoring counts these."""

    def __init__(self, message: str, version: str) -> None:
        super().__init__(message)
        self.version = version


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


def worker_identity() -> str:
    """``host:pid:token``: who holds a job; the pid lets a worker on the same host see a dead holder."""
    return f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(worker: str | None) -> bool:
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
    .returning(Job.attempts, Job.pipeline, Job.series_uid, Job.queued_at)
)
"""Take a waiting job, or one whose holder went silent, in one atomic statement (the common case of claim)."""

_SERIES_PATHS = select(Instance.path).where(Instance.series_uid == bindparam("series_uid")).order_by(Instance.path)


def series_paths(session: Session | Connection, series_uid: str) -> tuple[Path, ...]:
    """The stored files of a series, in path order."""
    return tuple(Path(p) for p in session.scalars(_SERIES_PATHS, {"series_uid": series_uid}).all())


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
                attempt, pipeline, series_uid, queued_at = row
                return Lease(job_id, worker, attempt, pipeline, series_uid, queued_at, now,
                             series_paths(connection, series_uid))
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
            if not (silent or _holder_is_dead(job.worker)):
                log.info("job %s: already running on %s; duplicate message dropped", job_id, job.worker)
                return None
        elif job.state not in (JobState.queued, JobState.retrying):
            log.info("job %s: already %s; duplicate message dropped", job_id, job.state.value)
            return None
        worker, now, seen_state, attempt = worker_identity(), utcnow(), job.state, job.attempts + 1
        pipeline, series_uid, queued_at = job.pipeline, job.series_uid, job.queued_at
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
        return Lease(job_id, worker, attempt, pipeline, series_uid, queued_at, now, series_paths(session, series_uid))


def _holds(lease: Lease):  # type: ignore[no-untyped-def]
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
                held = connection.execute(update(Job).where(*_holds(self._lease)).values(heartbeat_at=utcnow())).rowcount
        except Exception:  # noqa: BLE001 - a missed beat is retried on the next period
            log.warning("job %s: heartbeat failed; retrying", self._lease.job_id, exc_info=True)
            return
        if not held and not self.lost:
            log.warning("job %s: lease lost (the job was reset or timed out)", self._lease.job_id)
            self.lost = True


def _run(settings: Settings, database: Database, lease: Lease) -> tuple[list, dict[str, float], Observation]:
    """Load, infer, write; returns the written results, per-stage seconds and what quality monitoring keeps."""
    from node.deliver.fallback import fallback_needed
    from pipelines.registry import get_pipeline
    from pipelines.volume import load_series

    timings: dict[str, float] = {}
    try:
        pipeline = get_pipeline(lease.pipeline, settings.pipelines)
    except KeyError as exc:
        raise PermanentJobError(str(exc.args[0])) from exc
    paths = list(lease.paths)
    if not paths:
        raise PermanentJobError(f"series {lease.series_uid} has no stored instances")
    try:
        header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise PermanentJobError(f"unreadable series: {paths[0].name}: {exc}") from exc
    refusal = pipeline.accepts(header)
    if refusal:
        raise SeriesRefused(f"pipeline {lease.pipeline} does not accept this series: {refusal}", pipeline.version)
    try:
        started = time.perf_counter()
        volume = load_series(paths)
        timings["load"] = time.perf_counter() - started
        started = time.perf_counter()
        result = pipeline.run(volume)
        timings["infer"] = time.perf_counter() - started
    except UnsupportedSeries as exc:
        raise SeriesRefused(str(exc), pipeline.version) from exc
    observation = observe(header, result, settings.quality.input_attributes)
    written: list = []
    if result.segments or result.measurements or result.classifications:
        from pipelines.results import write_results
        from pipelines.results.uids import job_key

        started = time.perf_counter()
        out_dir = settings.node.storage_dir / "results" / str(lease.job_id)
        fallback = fallback_needed(settings, database, lease.job_id)  # else built if a destination refuses SEG
        steps: dict[str, float] = {}
        try:
            written = write_results(
                volume, result, settings.results, job_key=job_key(lease.series_uid, lease.pipeline), out_dir=out_dir,
                fallback=fallback, timings=steps,
            )
        except ValueError as exc:
            raise PermanentJobError(f"results do not fit the series: {exc}") from exc
        timings["write"] = time.perf_counter() - started
        timings.update({f"write_{step}": seconds for step, seconds in steps.items()})
    timings.update({f"pipeline_{k}": v for k, v in result.timings.items()})
    return written, timings, observation


def _register_results(database: Database, lease: Lease, written: list) -> bool:
    """Upsert ResultObject rows keyed (job, kind) while we still hold the lease; False if we lost it."""
    with database.session() as session:
        job = session.scalars(select(Job).where(*_holds(lease)).with_for_update()).first()
        if job is None:
            return False
        record_results(session, lease.job_id, written)
    return True


def record_results(session: Session, job_id: int, written: list) -> None:
    """Upsert job ``job_id``'s ResultObject rows, keyed (job, kind), for the written result files."""
    for item in written:
        row = get_or_add(session, ResultObject, job_id=job_id, kind=item.kind)
        row.sop_class_uid, row.sop_instance_uid = item.sop_class_uid, item.sop_instance_uid
        row.series_uid, row.study_uid = item.series_uid, item.study_uid
        row.path, row.size_bytes, row.created_at = str(item.path), item.size_bytes, utcnow()


def _finish(database: Database, lease: Lease, **values: object) -> bool:
    """Record the run's outcome if we still hold the lease; False if we lost it."""
    changes = {"finished_at": utcnow(), **values}
    with database.engine.begin() as connection:
        return bool(connection.execute(update(Job).where(*_holds(lease)).values(**changes)).rowcount)


_SUCCEED = (
    update(Job)
    .where(Job.id == bindparam("lease_job"), Job.state == JobState.running, Job.worker == bindparam("lease_holder"))
    .values(
        state=JobState.succeeded,
        reason=None,
        timings=bindparam("run_timings"),
        run_count=Job.run_count + 1,
        finished_at=bindparam("done_at"),
    )
)
"""The common outcome, built once: a worker records it for every job."""


def _succeed(database: Database, lease: Lease, timings: dict[str, float], observation: Observation) -> bool:
    """Mark the job succeeded, with what quality monitoring keeps of the run, if we still hold the lease; False
    if we lost it."""
    values = {"lease_job": lease.job_id, "lease_holder": lease.worker, "run_timings": timings, "done_at": utcnow()}
    with database.engine.begin() as connection:
        if not connection.execute(_SUCCEED, values).rowcount:
            return False
        record_run(connection, lease.job_id, lease.series_uid, observation)
        return True


def retry_delay(settings: Settings, attempt: int) -> float:
    """Backoff before the next attempt: initial, doubled per attempt, capped."""
    return min(settings.queue.retry_max_seconds, settings.queue.retry_initial_seconds * 2 ** max(0, attempt - 1))


def process_job(settings: Settings, database: Database, job_id: int) -> Outcome:
    """Run job ``job_id`` once under a lease and record its outcome in the database."""
    lease = claim(settings, database, job_id)
    if lease is None:
        return Outcome.skipped
    queue_wait = (lease.started_at - lease.queued_at).total_seconds() if lease.queued_at else None
    log.info(
        "job %s: %s on series %s, attempt %d (%s)", job_id, lease.pipeline, lease.series_uid, lease.attempt, lease.worker
    )
    started = time.perf_counter()
    try:
        with Heartbeat(database, lease, settings.queue.heartbeat_seconds) as heartbeat:
            written, timings, observation = _run(settings, database, lease)
            if heartbeat.lost or (written and not _register_results(database, lease, written)):
                log.warning("job %s: lost its lease while running; this run's outcome is discarded", job_id)
                return Outcome.lost
    except (PermanentJobError, UnsupportedSeries) as exc:
        log.error("job %s: failed permanently: %s", job_id, exc)
        _finish(database, lease, state=JobState.failed, reason=str(exc), heartbeat_at=None)
        if isinstance(exc, SeriesRefused):
            record_refusal(database, job_id, lease.pipeline, exc.version, lease.series_uid, str(exc),
                           lease.paths[0] if lease.paths else None, settings.quality.input_attributes)
        return Outcome.failed
    except Exception as exc:  # noqa: BLE001 - any other error may be transient: retry, bounded
        reason = f"{type(exc).__name__}: {exc}"
        if lease.attempt >= settings.queue.max_job_attempts:
            log.exception("job %s: failed after %d attempts", job_id, lease.attempt)
            _finish(database, lease, state=JobState.failed, reason=f"gave up after {lease.attempt} attempts: {reason}")
            return Outcome.failed
        delay = retry_delay(settings, lease.attempt)
        log.warning("job %s: attempt %d failed (%s); retrying in %.1f s", job_id, lease.attempt, reason, delay)
        # A retrying job's queued_at is when it is due again; the dispatcher enqueues it then.
        due = utcnow() + dt.timedelta(seconds=delay)
        _finish(database, lease, state=JobState.retrying, reason=reason, queued_at=due, finished_at=None)
        return Outcome.retrying
    if written:
        from node.deliver.outbox import schedule_deliveries

        schedule_deliveries(settings, database, job_id)
    timings["total"] = time.perf_counter() - started
    if queue_wait is not None:
        timings["queue_wait"] = queue_wait
    if not _succeed(database, lease, timings, observation):
        log.warning("job %s: lost its lease before it could be marked done", job_id)
        return Outcome.lost
    log.info("job %s: succeeded (%d result objects) in %.2f s", job_id, len(written), timings["total"])
    return Outcome.succeeded
