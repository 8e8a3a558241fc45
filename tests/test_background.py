"""The node's background loops: progress in one stage wakes the next at once; stop ends every loop promptly; a
failing dependency is logged once when it fails and once when it is back, with backoff in between."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from node.config import Settings
from node.db import open_database
from node.operate import background
from node.operate.background import Loop
from node.waiting import wait_until
from node.web.metrics import loop_failures
from tests.support.postgres import private_cluster

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


INDEX_LOOPS = ["assembler", "dispatcher", "outbox"]  # each reads the index on every tick, 0.05 s to 1 s apart


@pytest.mark.postgres
def test_loops_against_a_stopped_index_log_once_back_off_and_recover(tmp_path, caplog):
    with private_cluster() as cluster:
        settings = Settings.model_validate({"node": {"storage_dir": str(tmp_path), "database_url": cluster.url}})
        database = open_database(cluster.url)
        stop = threading.Event()
        caplog.set_level(logging.DEBUG, logger=background.__name__)
        before = background.failure_counts()

        def failures() -> dict[str, int]:
            return {name: count - before.get(name, 0) for name, count in background.failure_counts().items()}

        threads = background.start_background(settings, database, stop, only=INDEX_LOOPS)
        try:
            cluster.crash()
            down_at = time.monotonic()
            wait_until(lambda: all(failures().get(name) for name in INDEX_LOOPS), 10, "every loop failing", 0.05)
            time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))  # a 3 s outage
            during = [r for r in caplog.records if r.name == background.__name__]
            failed = failures()
            cluster.start()
            up_at = time.monotonic()
            wait_until(lambda: all(f"background loop {name} recovered" in caplog.text for name in INDEX_LOOPS),
                       15, "every loop recovered", 0.05)
            recovered_in = time.monotonic() - up_at
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            database.dispose()
    warnings = [r for r in during if r.levelno >= logging.WARNING]
    assert sorted(r.getMessage().split()[2] for r in warnings) == sorted(INDEX_LOOPS)  # one each, on its first failure
    assert all(r.exc_info for r in warnings)  # with the traceback, once
    # Backing off: the assembler (0.05 s period) failed a handful of times in 3 s, not sixty.
    assert 3 <= failed["assembler"] <= 8, failed
    assert len(during) <= 3 * 8  # debug lines included
    scraped = {sample.labels["loop"]: sample.value for sample in loop_failures().samples
               if sample.name.endswith("_total")}
    assert all(scraped[name] >= failed[name] for name in INDEX_LOOPS)
    infos = [r for r in caplog.records if r.name == background.__name__ and r.levelno == logging.INFO]
    assert len(infos) == len(INDEX_LOOPS) and "failed tick(s)" in infos[0].getMessage()
    assert recovered_in < 7.0  # within the longest backoff reached (at most 6.4 s here), not the cap (30 s)
