"""The node's background loops, run by `pacsnode serve` beside the SCP.

Each loop is a ``tick(settings, database)`` function of its own stage, called periodically until the stop
event is set. A tick that raises is logged and retried on the next period; it never stops the node.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from node.config import Settings
from node.db import Database

log = logging.getLogger(__name__)

Tick = Callable[[Settings, Database], None]


@dataclass(frozen=True)
class Loop:
    name: str
    target: str  # "module:function"
    period: Callable[[Settings], float]


LOOPS: list[Loop] = [
    # A series is seen complete within 50 ms of its quiet period; an idle tick is one indexed query.
    Loop("assembler", "node.assemble:tick", lambda s: min(0.05, s.node.series_quiet_seconds / 4)),
    Loop("dispatcher", "node.queue.dispatch:tick", lambda s: 0.05),  # an idle tick is one indexed query
    Loop("reconciler", "node.queue.reconcile:tick", lambda s: s.queue.reconcile_seconds),
    Loop("outbox", "node.deliver.outbox:tick", lambda s: 1.0),
    Loop("retention", "node.retention:tick", lambda s: s.retention.check_seconds),
]


def _resolve(target: str) -> Tick:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _run(loop: Loop, tick: Tick, settings: Settings, database: Database, stop: threading.Event) -> None:
    period = loop.period(settings)
    while not stop.is_set():
        try:
            tick(settings, database)
        except Exception:
            log.exception("background loop %s failed; retrying in %.1f s", loop.name, period)
        stop.wait(period)


def start_background(
    settings: Settings, database: Database, stop: threading.Event, only: list[str] | None = None
) -> list[threading.Thread]:
    """Start every loop (or those named in ``only``) as daemon threads; they end when ``stop`` is set."""
    threads = []
    for loop in LOOPS:
        if only is not None and loop.name not in only:
            continue
        tick = _resolve(loop.target)
        thread = threading.Thread(
            target=_run, args=(loop, tick, settings, database, stop), name=f"pacsnode-{loop.name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    return threads
