"""The embedded workers' supervision, on real processes: one log line per death, a growing backoff, a lock."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import pytest

from node.operate.supervisor import SupervisedWorker
from node.queue.embedded import WorkerSetRunning, hold_lock, lock_holder, lock_path


def test_a_worker_that_keeps_dying_is_restarted_later_each_time_with_one_line_per_death(caplog) -> None:
    caplog.set_level(logging.INFO, logger="node.operate.supervisor")
    worker = SupervisedWorker("job worker", "gpu", [sys.executable, "-c", "raise SystemExit(3)"])
    worker.start()
    pids = []
    deadline = time.monotonic() + 30
    while worker.deaths_in_row < 2 and time.monotonic() < deadline:
        if worker.process is not None and worker.process.pid not in pids:
            pids.append(worker.process.pid)
        worker.watch(time.monotonic())
        time.sleep(0.02)
    assert worker.deaths_in_row == 2 and worker.restarts == 1
    assert "job worker down" in worker.describe(time.monotonic()) and not worker.ready
    lines = [r.getMessage() for r in caplog.records if "restarting it" in r.getMessage()]
    assert lines == [f"embedded job worker (pid {pids[0]}) exited with code 3; restarting it in 1 s",
                     f"embedded job worker (pid {pids[1]}) exited with code 3; restarting it in 2 s"]


def test_one_lock_per_storage_folder_and_queue(tmp_path: Path) -> None:
    path = lock_path(tmp_path, "gpu")
    held = hold_lock(path)
    try:
        assert lock_holder(path) == str(os.getpid())
        with pytest.raises(WorkerSetRunning, match=f"pid {os.getpid()}.*node.storage_dir"):
            hold_lock(path)
        assert lock_holder(lock_path(tmp_path, "delivery")) is None
    finally:
        os.close(held)
    assert path.exists() and lock_holder(path) is None  # the file stays; a closed (or dead) holder does not block
    os.close(hold_lock(path))
