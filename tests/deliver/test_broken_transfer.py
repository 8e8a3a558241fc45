"""A PACS that breaks off a transfer (A-ABORT or a reset connection) mid-SEG: the attempt is reported as what it
was, at once, and the results are delivered on the prompt retry, with the default delivery settings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from node.db import AuditEvent, DeliveryState
from node.deliver.outbox import schedule_deliveries
from node.operate import audit
from pipelines.results import write_results
from pipelines.settings import ResultOptions
from pipelines.volume import load_series
from tests.support.results import make_result, write_ct_series
from tests.support.breaking_proxy import BreakingProxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


def _seg_and_sr(directory: Path) -> dict[str, Path]:
    volume = load_series(write_ct_series(directory / "ct"))
    written = write_results(volume, make_result(volume), ResultOptions(), "broken-transfer", directory / "results")
    return {item.kind: item.path for item in written}


@pytest.mark.parametrize("mode", ["abort", "reset"])
def test_results_reach_orthanc_seconds_after_it_broke_off_mid_seg(make_node, orthanc, tmp_path: Path,
                                                                  mode: str) -> None:
    results = _seg_and_sr(tmp_path)
    assert results["seg"].stat().st_size > 6000
    with BreakingProxy(orthanc.dicom_port, mode=mode, after_bytes=3000) as proxy:
        destination = {"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1", "port": proxy.port}
        node = make_node(destinations=[destination], delivery={})  # the default delivery settings (DIMSE timeout 120 s)
        job = node.add_job(results, ["pacs"])
        node.start_worker("delivery", "solo", ready=False)
        node.start_loops("outbox")
        schedule_deliveries(node.settings, node.database, job)
        wait_for(lambda: all(r.last_status == "aborted" for r in node.deliveries()), 60, "the broken attempt")
        broken_at = time.monotonic()
        wait_for(lambda: all(r.state == DeliveryState.delivered for r in node.deliveries()), 60, "the retry")
        elapsed = time.monotonic() - broken_at
        assert proxy.broken == 1 and proxy.connections == 2
    assert elapsed < 10  # the retry comes delivery.retry_initial_seconds (5 s) after the break
    assert all(r.attempts == 2 and r.last_status == "0x0000" for r in node.deliveries())
    assert len(orthanc.instances()) == 2
    with node.database.session() as session:
        attempts = session.scalars(select(AuditEvent).where(AuditEvent.event == audit.RESULTS_DELIVERED)
                                   .order_by(AuditEvent.id)).all()
        first, last = attempts[0], attempts[-1]
        assert first.outcome != 0 and last.outcome == 0
        assert (last.at - first.at).total_seconds() < 10
        detail = first.detail or ""
    assert "broke off the transfer" in detail and "timeout" not in detail.lower()
    assert ("A-ABORT from the service user" if mode == "abort" else "closed or reset") in detail
