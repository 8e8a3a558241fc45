"""The node's background loops, run by `pacsnode serve` beside the SCP.

Each loop is a ``tick(settings, database)`` function of its own stage, called periodically until the stop
event is set. A tick that raises is logged and retried on the next period; it never stops the node. A loop
whose tick reports progress (returns something truthy) wakes the loop it names in ``then`` at once: a series
the assembler completes is routed and queued without waiting for the dispatcher's next period.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

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


LOOPS: list[Loop] = [
    # A series is seen complete within 50 ms of its quiet period; an idle tick is one indexed query.
    Loop("assembler", "node.assemble.completion:tick", lambda s: min(0.05, s.node.series_quiet_seconds / 4), then="dispatcher"),
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


def _run(loop: Loop, tick: Tick, settings: Settings, database: Database, stop: threading.Event,
         wakes: dict[str, threading.Event]) -> None:
    period = loop.period(settings)
    while not stop.is_set():
        progress = None
        try:
            progress = tick(settings, database)
        except Exception:
            log.exception("background loop %s failed; retrying in %.1f s", loop.name, period)
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
    for loop in LOOPS:
        if only is not None and loop.name not in only:
            continue
        tick = _resolve(loop.target)
        thread = threading.Thread(
            target=_run, args=(loop, tick, settings, database, stop, wakes), name=f"pacsnode-{loop.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads
