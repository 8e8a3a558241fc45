"""`pacsnode deliveries` shows the outbox; `pacsnode retry` re-queues failed deliveries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from node.db import DeliveryState
from node.deliver.attempt import deliver
from node.deliver.outbox import schedule_deliveries
from tests.support.peers import StoreSCP, result_copy

PRIVATE_CLASS = "1.2.826.0.1.3680043.8.498.4243"


def _pacsnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "pacsnode"), *args], capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})


def test_deliveries_lists_and_retry_requeues(make_node, storescp: StoreSCP, tmp_path: Path, ct_files: list[str]) -> None:
    node = make_node(destinations=[{"name": "pacs", "ae_title": "STORESCP", "host": "127.0.0.1", "port": storescp.port}])
    job = node.add_job({"seg": result_copy(ct_files[0], tmp_path / "r", sop_class=PRIVATE_CLASS)}, ["pacs"])
    [delivery_id] = schedule_deliveries(node.settings, node.database, job)
    deliver(node.settings, node.database, delivery_id)
    listing = _pacsnode("deliveries", "--config", str(node.config_path))
    assert listing.returncode == 0, listing.stderr
    assert "failed 1" in listing.stdout and "not-accepted" in listing.stdout
    assert _pacsnode("retry", "--config", str(node.config_path)).returncode == 2
    requeued = _pacsnode("retry", "--config", str(node.config_path), "--all-failed")
    assert requeued.returncode == 0, requeued.stderr
    assert f"re-queued 1 delivery: {delivery_id}" in requeued.stdout
    [row] = node.deliveries()
    assert row.state == DeliveryState.pending and row.attempts == 0
    assert _pacsnode("retry", "--config", str(node.config_path), "--all-failed").returncode == 1
