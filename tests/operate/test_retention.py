"""Retention on a real index and real files: delivered series go after keep_hours, nothing else does."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from node.operate import audit

from node.operate import retention
from node.config import RetentionConfig
from node.db import AuditEvent, Delivery, DeliveryState, Instance, Job, JobState, ResultObject, Series, utcnow
from node.web.previews import preview_png
from tests.support.node_state import NodeState, build_state

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def state(tmp_path: Path) -> NodeState:
    node = build_state(tmp_path / "storage")
    node.settings.retention = RetentionConfig(enabled=True, keep_hours=24)
    preview_png(node.settings, node.database, node.seg_result_id)  # cached preview to be removed too
    yield node
    node.database.dispose()


def _age(state: NodeState, hours: float) -> None:
    """Move the series' receipt and deliveries ``hours`` into the past."""
    past = utcnow() - dt.timedelta(hours=hours)
    with state.database.session() as session:
        session.execute(update(Series).values(last_received_at=past, completed_at=past))
        session.execute(update(Delivery).where(Delivery.delivered_at.is_not(None)).values(delivered_at=past))


def _files(state: NodeState) -> list[Path]:
    storage = Path(state.settings.node.storage_dir)
    return [p for p in storage.rglob("*") if p.is_file() and p.suffix in (".dcm", ".png")]


def _deliver_all(state: NodeState) -> None:
    with state.database.session() as session:
        session.execute(update(Delivery).values(state=DeliveryState.delivered, delivered_at=utcnow()))


def _finish_jobs(state: NodeState) -> None:
    with state.database.session() as session:
        session.execute(update(Job).where(Job.state == JobState.queued).values(state=JobState.failed))


def test_delivered_series_is_removed_after_keep_hours(state: NodeState) -> None:
    _finish_jobs(state)
    _deliver_all(state)
    before = _files(state)
    assert len(before) == state.instance_count + 2  # CT slices, the SEG, the preview
    retention.tick(state.settings, state.database)
    assert _files(state) == before  # delivered just now: kept
    _age(state, 25)
    retention.tick(state.settings, state.database)
    assert _files(state) == []
    with state.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 0
        assert session.get(Series, state.series_uid).removed_at is not None
        assert session.scalar(select(func.count()).select_from(ResultObject)) == 1  # history stays
        event = session.scalars(select(AuditEvent).where(AuditEvent.event == audit.DATA_REMOVED)).one()
        assert event.series_uid == state.series_uid and event.instance_count == state.instance_count
        assert event.action == "D"


def test_series_with_undelivered_results_is_kept(state: NodeState) -> None:
    _finish_jobs(state)
    _age(state, 100)  # one delivery failed for good
    retention.tick(state.settings, state.database)
    assert len(_files(state)) == state.instance_count + 2
    state.settings.retention.remove_undelivered_after_hours = 48
    retention.tick(state.settings, state.database)
    assert _files(state) == []


def test_series_with_a_waiting_job_is_kept(state: NodeState) -> None:
    _deliver_all(state)
    _age(state, 100)  # but its "queued-one" job has not run yet
    retention.tick(state.settings, state.database)
    assert len(_files(state)) == state.instance_count + 2


def test_retention_off_removes_nothing(state: NodeState) -> None:
    _finish_jobs(state)
    _deliver_all(state)
    _age(state, 1000)
    state.settings.retention.enabled = False
    retention.tick(state.settings, state.database)
    assert len(_files(state)) == state.instance_count + 2
