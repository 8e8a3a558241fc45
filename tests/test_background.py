"""The node's background loops: progress in one stage wakes the next at once; stop ends every loop promptly."""

from __future__ import annotations

import threading
import time

from node.operate import background
from node.operate.background import Loop
from node.waiting import wait_until

RUNS: list[tuple[str, float]] = []


def producer(settings: object, database: object) -> bool:
    RUNS.append(("producer", time.monotonic()))
    return sum(1 for name, _ in RUNS if name == "producer") == 2  # progress on its second tick only


def consumer(settings: object, database: object) -> None:
    RUNS.append(("consumer", time.monotonic()))


def test_progress_wakes_the_next_loop_and_stop_ends_them(monkeypatch):
    RUNS.clear()
    monkeypatch.setattr(background, "LOOPS", [
        Loop("producer", f"{__name__}:producer", lambda s: 0.2, then="consumer"),
        Loop("consumer", f"{__name__}:consumer", lambda s: 30.0),
    ])
    stop = threading.Event()
    threads = background.start_background(None, None, stop)  # type: ignore[arg-type]
    try:
        # The consumer runs at start, then again as soon as the producer reports progress, not 30 s later.
        wait_until(lambda: sum(1 for name, _ in RUNS if name == "consumer") >= 2, 5, "the woken consumer", 0.01)
        progress_at = [t for name, t in RUNS if name == "producer"][1]
        woken_at = [t for name, t in RUNS if name == "consumer"][1]
        assert 0 <= woken_at - progress_at < 0.1
    finally:
        stopped = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(2)
    assert not any(thread.is_alive() for thread in threads)
    assert time.monotonic() - stopped < 1.0  # a loop waiting out a 30 s period still stops at once
