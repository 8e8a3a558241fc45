"""The node's background loops, run by `pacsnode serve` beside the SCP.

Each loop is a ``tick(settings, database)`` function of its own stage, called periodically until the stop
event is set. A loop whose tick reports progress (returns something truthy) wakes the loop it names in ``then``
at once: a series the assembler completes is routed and queued without waiting for the dispatcher's next period.

A tick that raises never stops the node. The loop backs off (its period, doubled per failure in a row, at most
FAILURE_BACKOFF_CAP seconds) and logs once per change of state: one warning with the error and its traceback when
it starts failing, one info line with the count of failures when it recovers. A loop that recovers wakes the
others still failing, which most often failed for the same reason, so they do not wait out their backoff. A dependency that is down (the
index, the broker) thus costs a few log lines, however long it stays down; the failures in between are counted
(``failure_counts``, the metric ``pacsnode_background_loop_failures_total``) and logged at debug level.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from node.backoff import backoff_seconds
from node.config import Settings
from node.db import Database

log = logging.getLogger(__name__)

Tick = Callable[[Settings, Database], object]  # a truthy result means progress (wakes `then`)


@dataclass(frozen=True)
class Loop:
    name: str
    target: str  # "module:function"
    period: Callable[[Settings], float]
    then: str | None = None  # the loop to wake when a tick reports progress


STOP_CHECK_SECONDS = 0.1
"""How soon a waiting loop notices the stop event."""

FAILURE_BACKOFF_CAP = 30.0
"""The longest wait between two ticks of a failing loop: a dependency that comes back is used within this."""

_FAILURES: dict[str, int] = {}
_FAILURES_LOCK = threading.Lock()


def failure_counts() -> dict[str, int]:
    """How many ticks of each loop have failed since this process started (loops that never failed: absent)."""
    with _FAILURES_LOCK:
        return dict(_FAILURES)


LOOPS: list[Loop] = [
    # A series is seen complete within 50 ms of its settle or quiet period; an idle tick is one indexed query.
    Loop("assembler", "node.assemble.completion:tick", lambda s: 0.05, then="dispatcher"),
    Loop("dispatcher", "node.jobs.dispatch:tick", lambda s: 0.05),  # an idle tick is one indexed query
    Loop("reconciler", "node.jobs.reconcile:tick", lambda s: s.queue.reconcile_seconds),
    Loop("outbox", "node.deliver.outbox:tick", lambda s: 1.0),
    Loop("retention", "node.operate.retention:tick", lambda s: s.retention.check_seconds),
    Loop("quality", "node.quality.online:tick", lambda s: s.quality.score_seconds),
    Loop("drift", "node.quality.drift:tick", lambda s: s.quality.drift_seconds),
]


def _resolve(target: str) -> Tick:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


class _Health:
    """One loop's run of failures: logs its start (with the traceback) and its end, counts every failure."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_a_row = 0
        self.since = 0.0

    def failed(self, exc: Exception, period: float) -> float:
        """Count a failed tick; the seconds to wait before the next."""
        self.in_a_row += 1
        with _FAILURES_LOCK:
            _FAILURES[self.name] = _FAILURES.get(self.name, 0) + 1
        delay = backoff_seconds(period, max(period, FAILURE_BACKOFF_CAP), self.in_a_row)
        if self.in_a_row == 1:
            self.since = time.monotonic()
            log.warning("background loop %s is failing (%s: %s); retrying with backoff up to %.0f s, logged again "
                        "when it recovers", self.name, type(exc).__name__, exc, FAILURE_BACKOFF_CAP, exc_info=exc)
        else:
            log.debug("background loop %s failed again (%d in a row): %s; next try in %.1f s",
                      self.name, self.in_a_row, exc, delay)
        return delay

    def succeeded(self) -> None:
        """The loop's tick worked again after failing."""
        if self.in_a_row:
            log.info("background loop %s recovered after %d failed tick(s) over %.1f s",
                     self.name, self.in_a_row, time.monotonic() - self.since)
            self.in_a_row = 0


def _run(loop: Loop, tick: Tick, settings: Settings, database: Database, stop: threading.Event,
         wakes: dict[str, threading.Event], failing: set[str]) -> None:
    period = loop.period(settings)
    health = _Health(loop.name)
    while not stop.is_set():
        progress = None
        try:
            progress = tick(settings, database)
        except Exception as exc:
            failing.add(loop.name)
            _pause(health.failed(exc, period), wakes[loop.name], stop)
            continue
        if health.in_a_row:
            health.succeeded()
            failing.discard(loop.name)
            for other in list(failing):  # most often they failed for the same reason: try them now, not at
                wakes[other].set()       # the end of their backoff
        if progress and loop.then is not None:
            wakes[loop.then].set()
        _pause(period, wakes[loop.name], stop)


def _pause(period: float, wake: threading.Event, stop: threading.Event) -> None:
    """Wait ``period`` seconds, or less when woken; the stop event ends the wait within STOP_CHECK_SECONDS."""
    deadline = time.monotonic() + period
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or wake.wait(min(remaining, STOP_CHECK_SECONDS)):
            break
    wake.clear()


def start_background(
    settings: Settings, database: Database, stop: threading.Event, only: list[str] | None = None
) -> list[threading.Thread]:
    """Start every loop (or those named in ``only``) as daemon threads; they end when ``stop`` is set."""
    threads = []
    wakes = {loop.name: threading.Event() for loop in LOOPS}
    failing: set[str] = set()  # the loops whose last tick failed
    for loop in LOOPS:
        if only is not None and loop.name not in only:
            continue
        tick = _resolve(loop.target)
        thread = threading.Thread(target=_run, args=(loop, tick, settings, database, stop, wakes, failing),
                                  name=f"pacsnode-{loop.name}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads
