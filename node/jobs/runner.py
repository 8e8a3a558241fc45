"""Run one job: take its lease, load its series, run its pipeline, write its results and record the outcome.

Permanent problems (unreadable series, unsupported data, a pipeline that declines the series, a bundle that
cannot run it: :class:`pipelines.types.PipelineFailure`) fail the job at once with the reason; other errors are
retried with backoff until ``queue.max_job_attempts``. A job that waits for memory or for disk space to write
its results waits without using up an attempt, and carries on once they are free. A job's end is one transaction:
its result rows, the work of the stages after it (``JobHooks.on_success``: the outbox's delivery rows) and its
success are recorded together, under its lease, or not at all. The runner knows nothing of those stages: the
task that runs a job passes them in.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from node.backoff import backoff_seconds
from node.config import Settings
from node.db import Database, Job, JobState, utcnow
from node.jobs.lease import Heartbeat, Lease, claim, holds
from node.jobs.results import record_results, replaced_results
from node.jobs.admission import NeverFits, ResourcesBusy, admitted, pipeline_need
from node.operate.redaction import describe_error, error_text
from node.quality.observe import Observation, observe, record_refusal, record_run
from node.receive.diskguard import results_refusal
from pipelines.durable import TMP_SUFFIX, StorageFull, remove_partials
from pipelines.types import PipelineFailure, UnsupportedSeries

log = logging.getLogger(__name__)


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


class WaitingForSpace(ResourcesBusy):
    """The results cannot be written now for lack of disk space; the job waits for it."""


PARTIALS = f".*{TMP_SUFFIX}"  # an interrupted write's temporary files in a job's results folder


def _no_extra_outputs(_job_id: int) -> set[str]:
    return set()


def _nothing_to_add(_session: Session, _job_id: int) -> list[int]:
    return []


def _nothing_to_announce(_ids: list[int]) -> None:
    return None


@dataclass(frozen=True)
class JobHooks:
    """What the stages after a job contribute to it, passed in so that the runner never imports them.

    ``wanted_outputs(job_id)``: the outputs the job's destinations want (``DestinationConfig.outputs`` names);
    ``fallback`` and ``kos`` among them write the fallback images and the key object selection with the SEG and
    SR. ``on_success(session, job_id)``: runs inside the transaction that marks the job succeeded (the outbox adds its delivery rows) and
    returns what to announce once it is committed. ``after_commit(ids)``: announces them (the outbox sends its
    task messages); a failure there loses nothing, since the rows are already recorded.
    """

    wanted_outputs: Callable[[int], set[str]] = _no_extra_outputs
    on_success: Callable[[Session, int], list[int]] = _nothing_to_add
    after_commit: Callable[[list[int]], None] = _nothing_to_announce


@dataclass
class RunOutput:
    """What one run produced: the written result files, the seconds of each stage and what quality monitoring
    keeps of the run."""

    written: list = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    observation: Observation | None = None
    replaces: str | None = None  # for a re-run: what its report says it replaces


def _pipeline(settings: Settings, lease: Lease):  # type: ignore[no-untyped-def]
    from pipelines.registry import get_pipeline

    try:
        return get_pipeline(lease.pipeline, settings.pipelines)
    except KeyError as exc:
        raise PermanentJobError(str(exc.args[0])) from exc


def _check_series(pipeline, lease: Lease) -> pydicom.Dataset:  # type: ignore[no-untyped-def]
    """The series' first header; refuse, for good, a series with no files, an unreadable first file, or one the
    pipeline declines."""
    if not lease.paths:
        raise PermanentJobError(f"series {lease.series_uid} has no stored instances")
    try:
        header = pydicom.dcmread(lease.paths[0], stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise PermanentJobError(f"unreadable series: {lease.paths[0].name}: {error_text(exc)}") from exc
    refusal = pipeline.accepts(header)
    if refusal:
        raise SeriesRefused(f"pipeline {lease.pipeline} does not accept this series: {refusal}", pipeline.version)
    return header


def _load(lease: Lease):  # type: ignore[no-untyped-def]
    """The job's volume: its series, or a study-level job's inputs on the reference input's grid."""
    from pipelines.multiseries import stack_series
    from pipelines.volume import load_series

    if not lease.inputs:
        return load_series(list(lease.paths))
    return stack_series({name: load_series(list(paths)) for name, paths in lease.inputs.items()}, lease.reference)


def _instances(lease: Lease) -> int:
    """How many instances the job reads: its series', or all of a study-level job's inputs'."""
    return sum(len(paths) for paths in lease.inputs.values()) if lease.inputs else len(lease.paths)


def _run(settings: Settings, database: Database, lease: Lease, hooks: JobHooks) -> RunOutput:
    """Load, infer, write, with the pipeline's memory reserved on this host."""
    pipeline = _pipeline(settings, lease)
    header = _check_series(pipeline, lease)
    shortage = results_refusal(settings)
    if shortage:
        raise WaitingForSpace(f"waiting for disk space: {shortage}")  # before the work, which would be lost
    with database.session() as session:
        output = RunOutput(replaces=replaced_results(session, lease.job_id, _instances(lease)))
    with admitted(settings, lease.job_id, pipeline_need(settings, lease.pipeline, pipeline)):
        try:
            started = time.perf_counter()
            volume = _load(lease)
            output.timings["load"] = time.perf_counter() - started
            started = time.perf_counter()
            result = pipeline.run(volume)
            output.timings["infer"] = time.perf_counter() - started
        except UnsupportedSeries as exc:
            raise SeriesRefused(str(exc), pipeline.version) from exc
        output.observation = observe(header, result, settings.quality.input_attributes)
        if result.segments or result.findings or result.measurements or result.classifications:
            output.written = _write(settings, lease, volume, result, hooks, output)
    output.timings.update({f"pipeline_{k}": v for k, v in result.timings.items()})
    return output


def _write(settings: Settings, lease: Lease, volume, result, hooks: JobHooks,  # type: ignore[no-untyped-def]
           output: RunOutput) -> list:
    from pipelines.results import write_results
    from pipelines.results.uids import job_key

    started = time.perf_counter()
    out_dir = settings.node.storage_dir / "results" / str(lease.job_id)
    steps: dict[str, float] = {}
    remove_partials(out_dir, PARTIALS)  # left by an earlier attempt of this job that was killed mid-write
    wanted = hooks.wanted_outputs(lease.job_id)  # the fallback is built later if a destination refuses SEG
    try:
        written = write_results(
            volume, result, settings.results, job_key=job_key(lease.series_uid, lease.pipeline), out_dir=out_dir,
            fallback="fallback" in wanted, key_objects="kos" in wanted, timings=steps, replaces=output.replaces,
        )
    except StorageFull as exc:
        raise WaitingForSpace(f"waiting for disk space: none left writing results in {out_dir}") from exc
    except ValueError as exc:
        raise PermanentJobError(f"results do not fit the series: {error_text(exc)}") from exc
    finally:
        remove_partials(out_dir, PARTIALS)
    output.timings["write"] = time.perf_counter() - started
    output.timings.update({f"write_{step}": seconds for step, seconds in steps.items()})
    return written


def _finish(database: Database, lease: Lease, **values: object) -> bool:
    """Record the run's outcome if we still hold the lease; False if we lost it."""
    changes = {"finished_at": utcnow(), **values}
    with database.engine.begin() as connection:
        return bool(connection.execute(update(Job).where(*holds(lease)).values(**changes)).rowcount)


_SUCCEED = (
    update(Job)
    .where(Job.id == bindparam("lease_job"), Job.state == JobState.running, Job.worker == bindparam("lease_holder"))
    .values(
        state=JobState.succeeded,
        reason=None,
        timings=bindparam("run_timings"),
        run_count=Job.run_count + 1,
        source_instances=bindparam("instances"),
        finished_at=bindparam("done_at"),
    )
)
"""The common outcome, built once: a worker records it for every job."""


def _succeed(database: Database, lease: Lease, output: RunOutput, hooks: JobHooks) -> list[int] | None:
    """Record the results, the hooks' rows and the success in one transaction while we hold the lease.

    Returns what ``hooks.after_commit`` should announce, or None when the lease was lost (nothing recorded).
    """
    values = {"lease_job": lease.job_id, "lease_holder": lease.worker, "run_timings": output.timings,
              "done_at": utcnow(), "instances": _instances(lease)}
    with database.session() as session:
        if output.written:
            held = session.scalars(select(Job.id).where(*holds(lease)).with_for_update()).first()
            if held is None:
                return None
            record_results(session, lease.job_id, output.written)
            announce = hooks.on_success(session, lease.job_id)
        else:
            announce = []
        if not session.execute(_SUCCEED, values).rowcount:
            session.rollback()
            return None
        if output.observation is not None:  # in the same transaction: no commit of its own
            record_run(session.connection(), lease.job_id, lease.series_uid, output.observation)
    return announce


def retry_delay(settings: Settings, attempt: int) -> float:
    """Backoff before the next attempt: initial, doubled per attempt, capped."""
    return backoff_seconds(settings.queue.retry_initial_seconds, settings.queue.retry_max_seconds, attempt)


def _failed_for_good(settings: Settings, database: Database, lease: Lease, exc: Exception) -> Outcome:
    log.error("job %s: failed permanently: %s", lease.job_id, exc)
    _finish(database, lease, state=JobState.failed, reason=error_text(exc), heartbeat_at=None)
    if isinstance(exc, SeriesRefused):
        record_refusal(database, lease.job_id, lease.pipeline, exc.version, lease.series_uid, error_text(exc),
                       lease.paths[0] if lease.paths else None, settings.quality.input_attributes)
    return Outcome.failed


def _failed_for_now(settings: Settings, database: Database, lease: Lease, exc: Exception) -> Outcome:
    """Retry later with backoff, or fail once ``queue.max_job_attempts`` are used up."""
    reason = describe_error(exc)
    if lease.attempt >= settings.queue.max_job_attempts:
        log.exception("job %s: failed after %d attempts", lease.job_id, lease.attempt)
        _finish(database, lease, state=JobState.failed, reason=f"gave up after {lease.attempt} attempts: {reason}")
        return Outcome.failed
    delay = retry_delay(settings, lease.attempt)
    log.warning("job %s: attempt %d failed (%s); retrying in %.1f s", lease.job_id, lease.attempt, reason, delay)
    # A retrying job's queued_at is when it is due again; the dispatcher enqueues it then.
    due = utcnow() + dt.timedelta(seconds=delay)
    _finish(database, lease, state=JobState.retrying, reason=reason, queued_at=due, finished_at=None)
    return Outcome.retrying


def _waits(settings: Settings, database: Database, lease: Lease, exc: ResourcesBusy) -> Outcome:
    """Put the job back to wait for resources, its reason saying what for; the attempt does not count."""
    log.info("job %s: %s; trying again in %.0f s", lease.job_id, exc, settings.queue.resource_wait_seconds)
    due = utcnow() + dt.timedelta(seconds=settings.queue.resource_wait_seconds)
    _finish(database, lease, state=JobState.retrying, reason=str(exc), queued_at=due, finished_at=None,
            attempts=lease.attempt - 1, heartbeat_at=None)
    return Outcome.retrying


def process_job(settings: Settings, database: Database, job_id: int, hooks: JobHooks | None = None) -> Outcome:
    """Run job ``job_id`` once under a lease and record its outcome in the database."""
    hooks = hooks or JobHooks()
    lease = claim(settings, database, job_id)
    if lease is None:
        return Outcome.skipped
    log.info("job %s: %s on series %s, attempt %d (%s)", job_id, lease.pipeline, lease.series_uid, lease.attempt,
             lease.worker)
    started = time.perf_counter()
    try:
        with Heartbeat(database, lease, settings.queue.heartbeat_seconds) as heartbeat:
            output = _run(settings, database, lease, hooks)
            if heartbeat.lost:
                log.warning("job %s: lost its lease while running; this run's outcome is discarded", job_id)
                return Outcome.lost
            output.timings["total"] = time.perf_counter() - started
            if lease.queued_at is not None:
                output.timings["queue_wait"] = (lease.started_at - lease.queued_at).total_seconds()
            announce = _succeed(database, lease, output, hooks)
    except (PermanentJobError, PipelineFailure, NeverFits) as exc:
        return _failed_for_good(settings, database, lease, exc)
    except ResourcesBusy as exc:
        return _waits(settings, database, lease, exc)
    except Exception as exc:  # noqa: BLE001 - any other error may be transient: retry, bounded
        return _failed_for_now(settings, database, lease, exc)
    if announce is None:
        log.warning("job %s: lost its lease before it could be marked done", job_id)
        return Outcome.lost
    try:
        hooks.after_commit(announce)
    except Exception as exc:  # noqa: BLE001 - the job's end is recorded; its announcements are retried from the rows
        log.warning("job %s: succeeded, but announcing what follows failed (%s); it is retried from the database",
                    job_id, describe_error(exc))
    log.info("job %s: succeeded (%d result objects) in %.2f s", job_id, len(output.written), output.timings["total"])
    return Outcome.succeeded
