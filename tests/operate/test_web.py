"""The web server over real HTTP: metrics, health, login and previews."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from node.db import AuditEvent, open_database
from node.web.server import start_web
from tests.support.node_state import TOKEN, NodeState, build_state, make_settings
from tests.operate.webcheck import metrics

pytestmark = pytest.mark.timeout(120)


def test_metrics_report_receiving_jobs_deliveries_and_disk(node_state: NodeState, web) -> None:
    scraped = metrics(web.url)
    assert scraped["pacsnode_instances_received_total"][()] == node_state.instance_count
    assert scraped["pacsnode_received_bytes_total"][()] == node_state.received_bytes
    assert scraped["pacsnode_associations_total"][(("outcome", "accepted"),)] == 1
    assert scraped["pacsnode_series_completed_total"][()] == 1
    assert scraped["pacsnode_queue_depth"][()] == 1
    assert scraped["pacsnode_jobs"][(("state", "failed"),)] == 1
    assert scraped["pacsnode_deliveries"][(("state", "delivered"),)] == 1
    assert scraped["pacsnode_deliveries"][(("state", "failed"),)] == 1
    assert scraped["pacsnode_delivery_attempts_total"][(("outcome", "success"),)] == 1
    assert scraped["pacsnode_delivery_attempts_total"][(("outcome", "failure"),)] == 1
    infer = (("pipeline", "lungs"), ("stage", "infer"))
    assert scraped["pacsnode_job_duration_seconds_count"][infer] == 1
    assert scraped["pacsnode_job_duration_seconds_sum"][infer] == pytest.approx(2.1)
    assert scraped["pacsnode_job_duration_seconds_bucket"][(("le", "1.0"), *infer)] == 0
    assert scraped["pacsnode_job_duration_seconds_bucket"][(("le", "2.5"), *infer)] == 1
    assert scraped["pacsnode_disk_free_bytes"][()] > 0
    assert scraped["pacsnode_disk_guard_active"][()] == 0
    assert scraped["pacsnode_index_up"][()] == 1


def test_liveness_and_readiness(node_state: NodeState, web) -> None:
    assert httpx.get(f"{web.url}/healthz").json() == {"status": "alive"}
    ready = httpx.get(f"{web.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert set(ready.json()["checks"]) == {"database", "storage", "disk"}


def test_disk_guard_makes_the_node_not_ready_and_shows_inmetrics(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.node.min_free_disk_mb = 1 << 40  # more than any disk here: the guard must be active
    database = open_database(settings.node.resolved_database_url())
    server = start_web(settings, database)
    try:
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503
        disk = ready.json()["checks"]["disk"]
        assert disk["ok"] is False and "node.min_free_disk_mb" in disk["detail"]
        assert metrics(server.url)["pacsnode_disk_guard_active"][()] == 1
    finally:
        server.stop()
        database.dispose()


def test_dashboard_needs_the_token(node_state: NodeState, web) -> None:
    with httpx.Client(base_url=web.url) as client:
        assert client.get("/").status_code == 303
        assert client.get("/api/status").status_code == 401
        assert client.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(f"/results/{node_state.seg_result_id}/preview.png").status_code == 303
        wrong = client.post("/login", content="token=nope", headers={"content-type": "application/x-www-form-urlencoded"})
        assert "Wrong token" in wrong.text
        status = client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status.status_code == 200
        assert status.json()["queue"]["depth"] == 1
    with node_state.database.session() as session:
        logins = session.query(AuditEvent).filter_by(event="user-authentication").all()
        assert any(e.outcome != 0 for e in logins)
        assert all(TOKEN not in (e.detail or "") for e in logins)


def test_dashboard_is_closed_without_a_configured_token(tmp_path: Path) -> None:
    state = build_state(tmp_path / "storage", token="")
    server = start_web(state.settings, state.database)
    try:
        response = httpx.post(
            f"{server.url}/login", content="token=", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert "Wrong token" in response.text
        assert httpx.get(f"{server.url}/api/status", headers={"Authorization": "Bearer x"}).status_code == 401
    finally:
        server.stop()
        state.database.dispose()


def test_preview_shows_key_slices_with_segments_overlaid(node_state: NodeState, web) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = httpx.get(f"{web.url}/results/{node_state.seg_result_id}/preview.png", headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    assert image.shape[1] > 2 * image.shape[0]  # three key slices side by side
    red_tint = (image[..., 0] - image[..., 1] > 30) & (image[..., 0] - image[..., 2] > 30)
    green_tint = (image[..., 1] - image[..., 0] > 30) & (image[..., 1] - image[..., 2] > 30)
    assert red_tint.mean() > 0.02 and green_tint.mean() > 0.02  # both lungs overlaid
    missing = httpx.get(f"{web.url}/results/999999/preview.png", headers=headers)
    assert missing.status_code == 404 and "no result" in missing.json()["detail"]


def test_metrics_report_the_brokers_queues(node_state: NodeState, web) -> None:
    scraped = metrics(web.url)
    assert scraped["pacsnode_broker_up"][()] == 1  # the embedded broker of this node's storage
    assert scraped["pacsnode_broker_queue_messages"][(("queue", "gpu"),)] == 0
    assert (("queue", "delivery"),) in scraped["pacsnode_broker_queue_messages"]


@pytest.mark.redis
def test_metrics_count_messages_waiting_in_redis(tmp_path: Path) -> None:
    import uuid

    import redis

    from node.queue.celery_app import send

    settings = make_settings(tmp_path)
    prefix = f"pacsnode-optest-{uuid.uuid4().hex[:8]}:"
    settings.queue.broker_url, settings.queue.key_prefix = "redis://127.0.0.1:6379/0", prefix
    database = open_database(settings.node.resolved_database_url())
    server = start_web(settings, database)
    client = redis.Redis.from_url(settings.queue.broker_url)
    try:
        send(settings, "pacsnode.optest.not_a_task", 1)  # waits in the gpu queue: no worker here
        scraped = metrics(server.url)
        assert scraped["pacsnode_broker_up"][()] == 1
        assert scraped["pacsnode_broker_queue_messages"][(("queue", "gpu"),)] == 1
    finally:
        server.stop()
        database.dispose()
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


def test_an_unreachable_broker_shows_in_metrics_without_stalling_the_scrape(tmp_path: Path) -> None:
    import time

    settings = make_settings(tmp_path)
    settings.queue.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    database = open_database(settings.node.resolved_database_url())
    server = start_web(settings, database)
    try:
        started = time.monotonic()
        scraped = metrics(server.url)
        assert time.monotonic() - started < 5
        assert scraped["pacsnode_broker_up"][()] == 0
        assert "pacsnode_broker_queue_messages" not in scraped
        assert scraped["pacsnode_index_up"][()] == 1
    finally:
        server.stop()
        database.dispose()
