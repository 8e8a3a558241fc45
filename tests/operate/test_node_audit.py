"""A real `pacsnode serve`: the audit trail of who sent what, refused callers, the disk guard, and the
node's own /metrics counting what its receiving processes did."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from node.operate import audit
from node.db import AuditEvent
from tests.operate.webcheck import metric, wait_web, web_config
from tests.support.dcmtk import echoscu, storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import PACSNODE, NodeProcess, echo, free_port

pytestmark = pytest.mark.timeout(180)

TOKEN = "audit-test-token"


def _audit(node: NodeProcess, event: str) -> list[AuditEvent]:
    with node.database.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.event == event)).all())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    web_port = free_port()
    extra = {
        "node": {"allowed_calling_ae_titles": ["SCANNER", "BOUNDCT", "ECHOSCU"], "calling_ae_hosts": {"BOUNDCT": "10.9.9.9"}},
        "web": web_config(web_port, TOKEN),
        "logging": {"json": True},
    }
    with NodeProcess(tmp_path_factory.mktemp("audit"), extra=extra) as running:
        running.web_url = f"http://127.0.0.1:{web_port}"  # type: ignore[attr-defined]
        wait_web(running, running.web_url)  # type: ignore[attr-defined]
        yield running


def test_received_instances_are_audited_and_counted_without_phi(node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "series", 10)
    result = storescu(node.port, files, calling="SCANNER")
    assert result.returncode == 0, result.stderr
    events = node.wait_for(lambda: _audit(node, audit.INSTANCES_RECEIVED))
    assert len(events) == 1
    event = events[0]
    assert (event.source_ae_title, event.source_host, event.destination_ae_title) == ("SCANNER", "127.0.0.1", "PACSNODE")
    assert event.instance_count == 10 and len(event.sop_instance_uids) == 10 and event.size_bytes > 0
    assert event.action == "C" and event.outcome == 0
    log = node.log()
    assert "Test^Synthetic" not in log and "SYN0001" not in log  # no patient name or ID in the log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    audited = [r for r in records if r.get("audit_event") == audit.INSTANCES_RECEIVED]
    assert audited and audited[0]["series_uid"] == event.series_uid and audited[0]["calling_ae_title"] == "SCANNER"
    url = node.web_url  # type: ignore[attr-defined]
    assert metric(url, "pacsnode_instances_received_total") == 10
    assert metric(url, "pacsnode_received_bytes_total") == event.size_bytes
    assert metric(url, "pacsnode_associations_total", outcome="accepted") == 1


def test_unknown_and_misplaced_callers_are_refused_and_audited(node: NodeProcess) -> None:
    assert echoscu(node.port, calling="INTRUDER").returncode != 0
    assert echoscu(node.port, calling="BOUNDCT").returncode != 0  # bound to 10.9.9.9, calling from 127.0.0.1
    assert echoscu(node.port, calling="SCANNER").returncode == 0
    events = node.wait_for(lambda: [e for e in _audit(node, audit.ASSOCIATION_REJECTED) if e.source_ae_title in
                                     ("INTRUDER", "BOUNDCT")] or None)
    reasons = {e.source_ae_title: e.detail for e in events}
    assert "allowed_calling_ae_titles" in reasons["INTRUDER"]
    assert "10.9.9.9" in reasons["BOUNDCT"] and "calling_ae_hosts" in reasons["BOUNDCT"]
    assert metric(node.web_url, "pacsnode_associations_total", outcome="rejected") >= 2  # type: ignore[attr-defined]


def test_disk_guard_refuses_associations_below_the_threshold(tmp_path: Path, small_disk: Path) -> None:
    web_port = free_port()
    extra = {"node": {"storage_dir": str(small_disk / "storage"), "min_free_disk_mb": 40}, "web": web_config(web_port, TOKEN)}
    url = f"http://127.0.0.1:{web_port}"
    with NodeProcess(tmp_path / "node", extra=extra) as node:
        wait_web(node, url)
        assert metric(url, "pacsnode_disk_guard_active") == 0
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (30 * 1024 * 1024))  # 34 MiB free left, below 40
        assert not echo(node.port)
        assert "disk guard active" in node.wait_for(lambda: node.log() if "disk guard" in node.log() else None)
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert metric(url, "pacsnode_disk_guard_active") == 1
        refused = node.wait_for(lambda: _audit(node, audit.ASSOCIATION_REJECTED))
        assert "node.min_free_disk_mb" in refused[0].detail
        filler.unlink()
        assert echo(node.port)  # accepted again once space is back
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_status_command_shows_the_disk(node: NodeProcess) -> None:
    result = subprocess.run([str(PACSNODE), "status", "--config", str(node.config_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "disk:" in result.stdout and "MB free" in result.stdout
