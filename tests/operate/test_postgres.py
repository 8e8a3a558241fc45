"""The operate stage on PostgreSQL: metrics, dashboard queries, previews, audit and retention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from node.operate import retention
from node.config import RetentionConfig
from node.db import Delivery, DeliveryState, Job, JobState, Series, utcnow
from node.web.server import start_web
from tests.support.node_state import TOKEN, build_state
from tests.operate.webcheck import metrics
from tests.support.postgres import throwaway_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL server."""
    with throwaway_database("pacsnode_operate") as url:
        yield url


def test_web_and_retention_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    state = build_state(tmp_path / "storage", postgres_url)
    server = start_web(state.settings, state.database)
    try:
        scraped = metrics(server.url)
        assert scraped["pacsnode_instances_received_total"][()] == state.instance_count
        assert scraped["pacsnode_associations_total"][(("outcome", "accepted"),)] == 1
        assert scraped["pacsnode_job_duration_seconds_count"][(("pipeline", "lungs"), ("stage", "infer"))] == 1
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/api/status", f"/results/{state.seg_result_id}/preview.png"):
            assert httpx.get(f"{server.url}{path}", headers=headers).status_code == 200
        for path in ("/", "/jobs", "/deliveries"):
            response = httpx.get(f"{server.url}{path}", headers=headers)
            assert response.status_code == 200 and state.series_uid in response.text
        assert "dicom-instances-received" in httpx.get(f"{server.url}/health", headers=headers).text
    finally:
        server.stop()
    with state.database.session() as session:
        session.execute(update(Job).where(Job.state == JobState.queued).values(state=JobState.failed))
        session.execute(update(Delivery).values(state=DeliveryState.delivered, delivered_at=utcnow()))
    past = utcnow() - dt.timedelta(hours=30)
    with state.database.session() as session:
        session.execute(update(Series).values(last_received_at=past, completed_at=past))
        session.execute(update(Delivery).values(delivered_at=past))
    state.settings.retention = RetentionConfig(enabled=True, keep_hours=24)
    retention.tick(state.settings, state.database)
    with state.database.session() as session:
        assert session.get(Series, state.series_uid).removed_at is not None
    assert not list(Path(state.settings.node.storage_dir, "instances").rglob("*.dcm"))
    state.database.dispose()
