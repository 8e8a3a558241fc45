"""Retention: remove received instances and result files some time after their results were delivered.

A series is removed once ``retention.keep_hours`` have passed since the later of its last received instance
and its last delivery, provided no job of it is still waiting or running and every delivery of its results
is done (delivered, or replaced by a fallback). Series whose deliveries failed for good are removed only
when ``retention.remove_undelivered_after_hours`` allows it. Index rows of series, jobs and deliveries stay
(history, metrics); instance rows and files, result files and previews go. Each removal is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from node.operate import audit
from node.config import Settings
from node.db import Database, Delivery, DeliveryState, Instance, Job, JobState, ResultObject, Series, utcnow
from node.web.previews import preview_path

log = logging.getLogger(__name__)

BATCH = 50  # series per tick, so one tick never holds the index for long
DONE_DELIVERY = {DeliveryState.delivered.value, "replaced"}
FINISHED_JOB = {JobState.succeeded, JobState.failed}


def _remove_file(path: str | os.PathLike[str], storage: Path) -> bool:
    """Remove ``path`` (only inside storage) and its parent folders that became empty."""
    target = Path(path)
    try:
        target.resolve().relative_to(storage.resolve())
    except ValueError:
        log.warning("retention: %s is outside storage_dir; not removed", target)
        return False
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    parent = target.parent
    while parent != storage and parent.is_relative_to(storage):
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return True


def _removal_reason(settings: Settings, session: Session, series: Series, now: dt.datetime) -> str | None:
    """Why ``series`` may be removed now, or None while it must be kept."""
    keep = dt.timedelta(hours=settings.retention.keep_hours)
    jobs = session.execute(select(Job.id, Job.state).where(Job.series_uid == series.series_uid)).all()
    if any(state not in FINISHED_JOB for _, state in jobs):
        return None
    deliveries = session.execute(
        select(Delivery.state, Delivery.delivered_at)
        .join(ResultObject, ResultObject.id == Delivery.result_id)
        .where(ResultObject.job_id.in_([job_id for job_id, _ in jobs]))
    ).all()
    states = {state.value if hasattr(state, "value") else str(state) for state, _ in deliveries}
    last = max([series.last_received_at] + [at for _, at in deliveries if at is not None])
    if states <= DONE_DELIVERY:
        if now - last >= keep:
            return f"kept {settings.retention.keep_hours:g} h after the last delivery" if deliveries else (
                f"kept {settings.retention.keep_hours:g} h after receipt (nothing to deliver)"
            )
        return None
    undelivered = settings.retention.remove_undelivered_after_hours
    if states <= DONE_DELIVERY | {DeliveryState.failed.value} and undelivered > 0:
        if now - last >= dt.timedelta(hours=undelivered):
            return f"deliveries failed; removed after {undelivered:g} h (retention.remove_undelivered_after_hours)"
    return None


def _remove_series(settings: Settings, database: Database, series_uid: str, reason: str) -> None:
    storage = Path(settings.node.storage_dir)
    with database.session() as session:
        series = session.get(Series, series_uid)
        instances = session.execute(
            select(Instance.path, Instance.size_bytes).where(Instance.series_uid == series_uid)
        ).all()
        results = session.execute(
            select(ResultObject.id, ResultObject.path)
            .join(Job, Job.id == ResultObject.job_id)
            .where(Job.series_uid == series_uid)
        ).all()
        for path, _ in instances:
            _remove_file(path, storage)
        for result_id, path in results:
            _remove_file(path, storage)
            _remove_file(preview_path(settings, result_id), storage)
        session.execute(delete(Instance).where(Instance.series_uid == series_uid))
        series.removed_at = utcnow()
        audit.data_removed(
            session,
            study_uid=series.study_uid,
            series_uid=series_uid,
            instance_count=len(instances),
            size_bytes=sum(size for _, size in instances),
            reason=f"retention: {reason}; {len(results)} result object(s) removed",
        )


def tick(settings: Settings, database: Database) -> None:
    """Remove what retention allows; a background loop of `pacsnode serve` calls this periodically."""
    if not settings.retention.enabled:
        return
    now = utcnow()
    shortest = min(
        h for h in (settings.retention.keep_hours, settings.retention.remove_undelivered_after_hours) if h > 0
    )
    with database.session() as session:
        candidates = session.scalars(
            select(Series)
            .where(
                Series.removed_at.is_(None),
                Series.completed_at.is_not(None),
                Series.last_received_at <= now - dt.timedelta(hours=shortest),
            )
            .order_by(Series.last_received_at)
            .limit(BATCH)
        ).all()
        decisions = [(s.series_uid, _removal_reason(settings, session, s, now)) for s in candidates]
    removed = 0
    for series_uid, reason in decisions:
        if reason is None:
            continue
        _remove_series(settings, database, series_uid, reason)
        removed += 1
    if removed:
        log.info("retention removed %d series", removed)
