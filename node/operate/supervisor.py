"""The embedded workers `pacsnode serve` runs, supervised: restarted when they die, reported by /readyz.

With the embedded broker, serve starts two worker processes: the job worker (the gpu queue) and the delivery
worker, so that sending never waits behind a running model. Each runs in a process group of its own, so serve
stops it explicitly and can kill it with its pool processes as one. A worker that dies is restarted after a
backoff (1 s, doubled per death in a row, at most a minute), with one log line per death naming its exit
code or signal. The workers end with serve however serve ends (``node.queue.embedded``), and hold a lock
under the storage folder, so one folder never has two worker sets.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.backoff import backoff_seconds
from node.config import Settings
from node.queue.celery_app import DELIVERY_QUEUE, GPU_QUEUE
from node.queue.embedded import READY_MESSAGE, REFUSED_EXIT_CODE, SUPERVISOR_FD_ENV, lock_holder, lock_path
from node.queue.worker import worker_command
from node.web.health import Check

log = logging.getLogger(__name__)

RESTART_INITIAL_SECONDS = 1.0
RESTART_CAP_SECONDS = 60.0
STABLE_SECONDS = 60.0  # a worker ready this long has recovered: its next death waits the initial delay again
LOCK_WAIT_SECONDS = 3.0  # at start: how long an earlier worker set may take to end before serve refuses
STOP_TIMEOUT_SECONDS = 30.0


def describe_exit(returncode: int) -> str:
    """``exited with code 1``, ``was killed by signal SIGKILL``, ... for a process's return code."""
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    if returncode == REFUSED_EXIT_CODE:
        return f"exited with code {returncode} (another worker set holds the storage folder's lock)"
    return f"exited with code {returncode}"


@dataclass
class SupervisedWorker:
    """One embedded worker process and its restart state."""

    name: str  # "job worker", "delivery worker"
    queues: str
    command: list[str]
    log_file: Path | None = None
    process: subprocess.Popen | None = None
    channel: socket.socket | None = None  # serve's end of the socket pair (see node.queue.embedded)
    ready_since: float | None = None
    deaths_in_row: int = 0
    restarts: int = 0
    down_since: float = field(default_factory=time.monotonic)
    restart_at: float = 0.0
    last_exit: str = ""

    def start(self) -> None:
        """Start the process; it must be called from a thread that lives as long as serve (the parent-death
        signal follows the thread that started the process)."""
        ours, theirs = socket.socketpair()
        output = open(self.log_file, "ab") if self.log_file is not None else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command, stdout=output, stderr=subprocess.STDOUT if output else None,
                env={**os.environ, SUPERVISOR_FD_ENV: str(theirs.fileno())}, pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            if output is not None:
                output.close()
        ours.setblocking(False)
        self.channel = ours
        self.ready_since = None
        log.info("embedded %s started (pid %d)", self.name, self.process.pid)

    @property
    def ready(self) -> bool:
        """Up and ready for tasks (a death shows at once, before ``watch`` notices it)."""
        return self.process is not None and self.ready_since is not None and self.process.poll() is None

    def watch(self, now: float) -> None:
        """Note readiness, notice a death (log it once, schedule the restart) and restart when due."""
        if self.process is None:
            if now >= self.restart_at:
                self.restarts += 1
                try:
                    self.start()
                except OSError as exc:  # e.g. out of processes or memory: try again later, like after a death
                    self._down(now, f"could not be started ({exc.strerror or exc})", "")
            return
        returncode = self.process.poll()
        if returncode is None:
            self._read_channel(now)
            if self.ready_since is not None and now - self.ready_since >= STABLE_SECONDS:
                self.deaths_in_row = 0
            return
        self._ended(returncode, now)

    def _read_channel(self, now: float) -> None:
        try:
            message = self.channel.recv(64) if self.channel is not None else b""
        except BlockingIOError:
            return
        if READY_MESSAGE in message and self.ready_since is None:
            self.ready_since = now
            log.info("embedded %s ready (pid %d)", self.name, self.process.pid)

    def _ended(self, returncode: int, now: float) -> None:
        pid = self.process.pid
        self.forget(kill_group=True)
        self._down(now, describe_exit(returncode), f" (pid {pid})")

    def _down(self, now: float, what: str, pid: str) -> None:
        """Log the death (once) and schedule the restart after the backoff."""
        self.deaths_in_row += 1
        delay = backoff_seconds(RESTART_INITIAL_SECONDS, RESTART_CAP_SECONDS, self.deaths_in_row)
        self.last_exit = what
        self.down_since, self.restart_at = now, now + delay
        log.error("embedded %s%s %s; restarting it in %.0f s", self.name, pid, what, delay)

    def forget(self, kill_group: bool) -> None:
        """Let go of the process (after its end, or to end it): kill its group when asked, close the channel."""
        if kill_group and self.process is not None:
            try:  # pool processes its death left behind
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
        if self.channel is not None:
            self.channel.close()
        self.process, self.channel, self.ready_since = None, None, None

    def describe(self, now: float) -> str:
        if self.ready:
            return f"{self.name} up (pid {self.process.pid})"
        if self.process is not None and self.process.returncode is not None:
            return f"{self.name} down: it {describe_exit(self.process.returncode)}; restarting it"
        if self.process is not None:
            return f"{self.name} starting (pid {self.process.pid})"
        return (f"{self.name} down for {now - self.down_since:.0f} s: it {self.last_exit}; "
                f"restart in {max(0.0, self.restart_at - now):.0f} s")


class WorkerSupervisor(Collector):
    """The embedded job and delivery workers of one `serve`; ``watch`` is called from serve's main loop."""

    def __init__(self, settings: Settings, config_path: Path, log_file: Path | None = None) -> None:
        self.storage_dir = Path(settings.node.storage_dir)
        self.workers = [
            SupervisedWorker("job worker", GPU_QUEUE,
                             worker_command(config_path, GPU_QUEUE, settings.queue.worker_concurrency), log_file),
            SupervisedWorker("delivery worker", DELIVERY_QUEUE,
                             worker_command(config_path, DELIVERY_QUEUE, settings.delivery.worker_concurrency),
                             log_file),
        ]

    def storage_in_use(self, wait: float = LOCK_WAIT_SECONDS) -> str | None:
        """Why this storage folder cannot have our workers (another worker set holds its lock), or None.

        Waits up to ``wait`` seconds for a worker set that is ending (that of a serve just killed)."""
        deadline = time.monotonic() + wait
        while True:
            held = {w.queues: holder for w in self.workers
                    if (holder := lock_holder(lock_path(self.storage_dir, w.queues))) is not None}
            if not held:
                return None
            if time.monotonic() >= deadline:
                pids = ", ".join(f"{queues} worker pid {pid}" for queues, pid in held.items())
                return (f"another pacsnode worker set ({pids}) already works on storage folder {self.storage_dir}: "
                        "stop the other `pacsnode serve` using it, or give this node its own node.storage_dir")
            time.sleep(0.1)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            worker.watch(now)

    def wait_ready(self, timeout: float) -> bool:
        """Watch until every worker is ready (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            self.watch()
            if all(w.ready for w in self.workers):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM every worker at once (each finishes its task in hand), wait, then kill what is left."""
        running = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        for worker in running:
            worker.process.terminate()
        deadline = time.monotonic() + timeout
        for worker in running:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("embedded %s (pid %d) did not stop in %.0f s; killing it",
                            worker.name, worker.process.pid, timeout)
                worker.forget(kill_group=True)
        for worker in self.workers:
            worker.forget(kill_group=True)

    def check(self) -> Check:
        """The readiness check of the workers: ok while every one is up and ready for tasks."""
        now = time.monotonic()
        return Check("workers", all(w.ready for w in self.workers),
                     "; ".join(w.describe(now) for w in self.workers))

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pacsnode_embedded_worker_up", "1 while the embedded worker is ready for tasks.",
                               labels=["worker"])
        restarts = CounterMetricFamily("pacsnode_embedded_worker_restarts",
                                       "Restarts of the embedded worker after it died.", labels=["worker"])
        for worker in self.workers:
            up.add_metric([worker.queues], 1.0 if worker.ready else 0.0)
            restarts.add_metric([worker.queues], float(worker.restarts))
        yield up
        yield restarts
