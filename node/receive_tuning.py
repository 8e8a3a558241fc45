"""Latency tuning of pynetdicom's reactors for the receiving processes.

pynetdicom polls: the association reactor sleeps a fixed 1 ms per loop and the DUL reactor
``_run_loop_delay`` (1 ms) whenever it is idle. Each received instance crosses both loops several
times, so those sleeps, not CPU, bound one association's rate. pynetdicom has no setting for the
first, hence the narrow shim below (only the 1 ms reactor poll is shortened).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pynetdicom.association
from pynetdicom import evt

REACTOR_POLL = 0.001  # the association reactor's hard-coded sleep


def shorten_reactor_poll(poll_seconds: float) -> None:
    """Make pynetdicom's association reactor poll every ``poll_seconds`` instead of 1 ms (process-wide)."""

    def sleep(seconds: float) -> None:
        time.sleep(poll_seconds if seconds == REACTOR_POLL else seconds)

    pynetdicom.association.time = SimpleNamespace(sleep=sleep)  # type: ignore[attr-defined]


def dul_delay_handler(poll_seconds: float):  # type: ignore[no-untyped-def]
    """An EVT_CONN_OPEN handler setting the new association's DUL idle delay."""

    def on_open(event: evt.Event) -> None:
        event.assoc.dul._run_loop_delay = poll_seconds

    return (evt.EVT_CONN_OPEN, on_open)
