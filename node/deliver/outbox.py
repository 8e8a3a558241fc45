"""The outbox: one Delivery row per (result object, destination), created after a job and resumed after a restart.

Rows move pending -> sending -> delivered | failed (or back to pending with a later ``next_attempt_at``).
A pending row's ``next_attempt_at`` is also when it is enqueued again if its task message went missing, so
nothing is ever left behind and nothing is enqueued in a tight loop.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Database, Delivery, DeliveryState, Job, ResultObject, get_or_add, utcnow
from node.deliver.outputs import plan, refused_classes, replaced_note
from node.deliver.targets import job_targets
from node.jobs.lease import holder_is_dead
from node.queue.celery_app import DELIVER_TASK, send

log = logging.getLogger(__name__)

def add_deliveries(settings: Settings, session: Session, job_id: int) -> list[int]:
    """Create (or reset to pending) job ``job_id``'s delivery rows in ``session``; their IDs.

    Runs inside the transaction that records the job's results and success, so a job that succeeded always
    has its deliveries. A re-run of the job resets its rows rather than adding new ones, so each (result,
    destination) pair is sent again exactly once. The rows are due at once: the caller enqueues their tasks
    after the commit (``enqueue_groups``), and the outbox loop enqueues them again if that message is lost.
    """
    now = utcnow()
    grace = dt.timedelta(seconds=settings.delivery.requeue_after_seconds)
    job = session.get(Job, job_id)
    if job is None:
        log.error("job %s: no such job; nothing to deliver", job_id)
        return []
    results = session.scalars(select(ResultObject).where(ResultObject.job_id == job_id)).all()
    ids: list[int] = []
    for target in job_targets(settings, session, job):
        to_send, replaced = plan(target.outputs, results, refused_classes(settings, session, target.name))
        for result in replaced:
            _mark_replaced(session, result, target.name, now)
        for result in to_send:
            row = get_or_add(session, Delivery, result_id=result.id, destination=target.name)
            row.state, row.attempts, row.last_status, row.error = DeliveryState.pending, 0, None, None
            row.created_at, row.next_attempt_at = now, now + grace
            row.sending_since, row.delivered_at, row.worker = None, None, None
            session.flush()
            ids.append(row.id)
    log.info("job %s: %d deliveries scheduled", job_id, len(ids))
    return ids


def schedule_deliveries(settings: Settings, database: Database, job_id: int) -> list[int]:
    """Create (or reset) job ``job_id``'s delivery rows and enqueue them; their IDs (``add_deliveries``)."""
    with database.session() as session:
        ids = add_deliveries(settings, session, job_id)
    enqueue_groups(settings, database, ids)
    return ids


def _mark_replaced(session: Session, result: ResultObject, destination: str, now: dt.datetime) -> None:
    """Record a SEG not sent to a destination known to refuse it (its fallback goes instead)."""
    row = session.scalars(
        select(Delivery).where(Delivery.result_id == result.id, Delivery.destination == destination)
    ).first()
    if row is None:
        row = Delivery(result_id=result.id, destination=destination)
        session.add(row)
    row.state, row.created_at, row.next_attempt_at = DeliveryState.replaced, now, None
    row.error = replaced_note(destination, result.sop_class_uid)


def enqueue_groups(settings: Settings, database: Database, ids: list[int]) -> None:
    """One task per (job, destination): the task sends that group's pending rows on one association."""
    if not ids:
        return
    with database.session() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.destination, ResultObject.job_id)
            .join(ResultObject, ResultObject.id == Delivery.result_id)
            .where(Delivery.id.in_(ids))
        ).all()
    leaders: dict[tuple[int, str], int] = {}
    for delivery_id, destination, job_id in rows:
        leaders.setdefault((job_id, destination), delivery_id)
    for delivery_id in leaders.values():
        enqueue(settings, delivery_id)


def enqueue(settings: Settings, delivery_id: int) -> None:
    """Send the delivery task for ``delivery_id`` to the ``delivery`` queue."""
    send(settings, DELIVER_TASK, delivery_id)


def tick(settings: Settings, database: Database) -> None:
    """Background loop: resume stuck 'sending' rows and enqueue pending rows that are due."""
    now = utcnow()
    stale = now - dt.timedelta(seconds=settings.delivery.sending_lease_seconds)
    with database.session() as session:
        sending = session.execute(
            select(Delivery.id, Delivery.worker, Delivery.sending_since).where(Delivery.state == DeliveryState.sending)
        ).all()
        for delivery_id, worker, since in sending:
            if (since is not None and since < stale) or holder_is_dead(worker):
                reset = session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.sending, Delivery.worker == worker)
                    .values(state=DeliveryState.pending, next_attempt_at=now, sending_since=None, worker=None)
                ).rowcount
                if reset:
                    log.warning("delivery %s: its sender %s stopped; back to pending", delivery_id, worker)
    grace = dt.timedelta(seconds=settings.delivery.requeue_after_seconds)
    with database.session() as session:
        due = session.scalars(
            select(Delivery.id).where(Delivery.state == DeliveryState.pending, Delivery.next_attempt_at <= now)
        ).all()
        if due:
            session.execute(update(Delivery).where(Delivery.id.in_(due)).values(next_attempt_at=now + grace))
    enqueue_groups(settings, database, list(due))


def retry_failed(settings: Settings, database: Database, delivery_ids: list[int] | None = None) -> list[int]:
    """Put failed deliveries (all, or those in ``delivery_ids``) back to pending and enqueue them."""
    now = utcnow()
    with database.session() as session:
        query = select(Delivery.id).where(Delivery.state == DeliveryState.failed)
        if delivery_ids is not None:
            query = query.where(Delivery.id.in_(delivery_ids))
        ids = list(session.scalars(query).all())
        if ids:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(
                    state=DeliveryState.pending, attempts=0, error=None, created_at=now,
                    next_attempt_at=now + dt.timedelta(seconds=settings.delivery.requeue_after_seconds),
                )
            )
    enqueue_groups(settings, database, ids)
    return ids
