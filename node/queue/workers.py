"""Worker processes as the ``workers`` table shows them: each registers itself, beats, and says when it stops.

Every Celery pool process (or a solo worker) records itself under ``host:pid:token`` and refreshes ``seen_at``
every ``queue.worker_beat_seconds`` from a thread of its own, whether it runs a job or not. Its job leases and
its delivery claims carry that identity as their prefix, so when the reconciler finds a worker silent for
``queue.worker_dead_after_seconds`` (``judge_silent``), it knows which jobs and deliveries to take back, on any
host: judged by beats alone, not by a process ID that means nothing on another host.

A worker judged dead that beats again (a stalled host, a network partition) is shown alive again; what it held
was already taken back, and its old leases no longer hold, so it cannot record those outcomes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Database, Job, JobState, WorkerProcess, WorkerState, record_event, utcnow

log = logging.getLogger(__name__)

HOSTNAME = socket.gethostname()
QUEUES_ENV = "PACSNODE_WORKER_QUEUES"  # the queues of the worker process (set by run_worker)

_LOCK = threading.Lock()
_IDENTITY: tuple[int, str] | None = None
_REGISTERED: tuple[int, "Beating"] | None = None


def process_identity() -> str:
    """``host:pid:token`` of this process (a forked child gets its own): the prefix of its leases and claims."""
    global _IDENTITY
    with _LOCK:
        if _IDENTITY is None or _IDENTITY[0] != os.getpid():
            _IDENTITY = (os.getpid(), f"{HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        return _IDENTITY[1]


def holder_process(holder: str | None) -> str:
    """The worker process identity of a lease or claim holder (``host:pid:token:claim`` → ``host:pid:token``)."""
    parts = (holder or "").split(":")
    return ":".join(parts[:3]) if len(parts) >= 4 else ""


class Beating:
    """This process's row in ``workers`` and the thread that refreshes its ``seen_at``."""

    def __init__(self, database: Database, identity: str, period: float) -> None:
        self.database, self.identity, self.period = database, identity, period
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-beat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.beat()

    def beat(self) -> None:
        """Refresh ``seen_at``; a worker judged dead while it was silent is shown alive again."""
        try:
            with self.database.engine.begin() as connection:
                revived = connection.execute(
                    update(WorkerProcess)
                    .where(WorkerProcess.id == self.identity, WorkerProcess.state == WorkerState.dead)
                    .values(state=WorkerState.alive, seen_at=utcnow(), reason="beating again after it was judged dead")
                ).rowcount
                if not revived:
                    connection.execute(update(WorkerProcess).where(WorkerProcess.id == self.identity)
                                       .values(seen_at=utcnow()))
        except Exception:  # noqa: BLE001 - a missed beat is retried on the next period
            log.warning("worker %s: beat failed; retrying", self.identity, exc_info=True)
            return
        if revived:
            log.warning("worker %s: judged dead while silent; what it held was taken back", self.identity)

    def stop(self, reason: str) -> None:
        self._stop.set()
        with self.database.engine.begin() as connection:
            connection.execute(
                update(WorkerProcess).where(WorkerProcess.id == self.identity)
                .values(state=WorkerState.stopped, reason=reason, seen_at=utcnow(), ended_at=utcnow())
            )


def register(settings: Settings, database: Database, queues: str | None = None) -> str:
    """Record this process in ``workers`` (once per process) and start its beats; its identity."""
    global _REGISTERED
    identity = process_identity()
    with _LOCK:
        if _REGISTERED is not None and _REGISTERED[0] == os.getpid():
            return identity
        now = utcnow()
        with database.session() as session:
            session.merge(WorkerProcess(
                id=identity, host=HOSTNAME, pid=os.getpid(), queues=(queues or os.environ.get(QUEUES_ENV, ""))[:64],
                state=WorkerState.alive, reason=None, started_at=now, seen_at=now, ended_at=None,
            ))
        beating = Beating(database, identity, settings.queue.worker_beat_seconds)
        beating.thread.start()
        _REGISTERED = (os.getpid(), beating)
    log.info("worker process %s registered", identity)
    return identity


def mark_stopped(reason: str = "stopped in order") -> None:
    """This process ends in order: stop its beats and show it stopped (nothing to take back)."""
    global _REGISTERED
    with _LOCK:
        registered, _REGISTERED = _REGISTERED, None
    if registered is None or registered[0] != os.getpid():
        return
    try:
        registered[1].stop(reason)
    except Exception:  # noqa: BLE001 - the reconciler will judge it dead instead
        log.warning("worker %s: could not record its stop", registered[1].identity, exc_info=True)


def judge_silent(settings: Settings, database: Database) -> list[str]:
    """Mark dead every alive worker silent for ``queue.worker_dead_after_seconds``; their identities."""
    limit = settings.queue.worker_dead_after_seconds
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=limit)
    dead = []
    with database.session() as session:
        silent = session.execute(
            select(WorkerProcess.id, WorkerProcess.seen_at)
            .where(WorkerProcess.state == WorkerState.alive, WorkerProcess.seen_at < cutoff)
        ).all()
        for identity, seen in silent:
            reason = f"no beat for {(now - seen).total_seconds():.0f} s (dead after {limit:g} s)"
            if session.execute(
                update(WorkerProcess)
                .where(WorkerProcess.id == identity, WorkerProcess.state == WorkerState.alive,
                       WorkerProcess.seen_at == seen)
                .values(state=WorkerState.dead, reason=reason, ended_at=now)
            ).rowcount:
                dead.append(identity)
                record_event(session, "worker-dead", f"worker {identity}: {reason}")
                log.warning("worker %s: %s; taking back what it held", identity, reason)
        forget_ended(session, now)
    return dead


def dead_among(database: Database, holders: Iterable[str | None]) -> set[str]:
    """The holders (lease or claim identities) among ``holders`` whose worker process is judged dead."""
    by_process: dict[str, list[str]] = {}
    for holder in holders:
        process = holder_process(holder)
        if process and holder:
            by_process.setdefault(process, []).append(holder)
    if not by_process:
        return set()
    with database.session() as session:
        dead = session.scalars(
            select(WorkerProcess.id)
            .where(WorkerProcess.id.in_(list(by_process)), WorkerProcess.state == WorkerState.dead)
        ).all()
    return {holder for process in dead for holder in by_process[process]}


SHOWN_ENDED = dt.timedelta(days=1)
"""How long a stopped or dead worker stays in the listing (alive ones are always listed)."""
KEPT_ENDED = dt.timedelta(days=7)
"""How long a stopped or dead worker's row is kept."""


def listing(session: Session, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The workers to show (`pacsnode status`, the dashboard): alive ones, then those ended in the last day,
    each with its state, last beat and the jobs it is running; newest first within each state."""
    now = now or utcnow()
    rows = session.scalars(
        select(WorkerProcess)
        .where(or_(WorkerProcess.state == WorkerState.alive, WorkerProcess.seen_at >= now - SHOWN_ENDED))
        .order_by(WorkerProcess.seen_at.desc())
        .limit(100)
    ).all()
    running: dict[str, int] = {}
    for holder in session.scalars(select(Job.worker).where(Job.state == JobState.running)):
        running[holder_process(holder)] = running.get(holder_process(holder), 0) + 1
    order = {WorkerState.alive: 0, WorkerState.dead: 1, WorkerState.stopped: 2}
    return [
        {"name": row.id, "host": row.host, "queues": row.queues, "state": row.state.value, "reason": row.reason or "",
         "last_seen": row.seen_at, "jobs": running.get(row.id, 0)}
        for row in sorted(rows, key=lambda r: order[r.state])
    ]


def forget_ended(session: Session, now: dt.datetime) -> None:
    """Remove the rows of workers stopped or dead for more than KEPT_ENDED."""
    session.execute(delete(WorkerProcess).where(WorkerProcess.state != WorkerState.alive,
                                                WorkerProcess.seen_at < now - KEPT_ENDED))
