"""One delivery attempt: claim the rows, send them, record what the destination said.

A row is claimed with an atomic pending -> sending update, so a duplicate task message sends nothing. The
task for one row also takes the other pending rows of the same job and destination, so a job's SEG and SR
travel on one association.
"""

from __future__ import annotations

import logging
import datetime as dt
from dataclasses import dataclass, field, replace
from functools import partial

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from node.operate import audit
from node.config import Settings
from node.db import (Database, Delivery, DeliveryState, Job, ResultObject, Series, keep_commit_sync, record_event,
                     utcnow)
from node.deliver.outputs import (SEG_SOP_CLASSES, forget_refusal, is_seg_refusal, record_refusal, replaced_note,
                                  send_fallback_instead)
from node.deliver.late_fallback import write_late_fallback
from node.deliver.outbox import enqueue_groups
from node.deliver.targets import Target, resolve_target
from node.deliver.policy import Decision, Verdict, decide
from node.jobs.lease import worker_identity
from node.dicom.tls import client_context
from node.dicom.scu import Failure, StoreOutcome, send_objects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    attempts: int
    created_at: object


def _claim(database: Database, delivery_id: int, worker: str) -> tuple[str, str | None, list[Claimed]]:
    """Claim the row and its pending siblings; returns (destination, calling host, claimed rows)."""
    with database.session() as session:
        row = session.get(Delivery, delivery_id)
        if row is None:
            log.warning("delivery %s: no such delivery; message dropped", delivery_id)
            return "", None, []
        result = session.get(ResultObject, row.result_id)
        job = session.get(Job, result.job_id) if result is not None else None
        series = session.get(Series, job.series_uid) if job is not None else None
        candidates = session.scalars(
            select(Delivery)
            .join(ResultObject, ResultObject.id == Delivery.result_id)
            .where(
                ResultObject.job_id == (result.job_id if result is not None else -1),
                Delivery.destination == row.destination,
                Delivery.state == DeliveryState.pending,
            )
            .order_by(Delivery.id)
        ).all()
        claimed: list[Claimed] = []
        now = utcnow()
        for candidate in candidates:
            attempts = candidate.attempts + 1  # read before the update refreshes the object
            taken = session.execute(
                update(Delivery)
                .where(Delivery.id == candidate.id, Delivery.state == DeliveryState.pending)
                .values(state=DeliveryState.sending, sending_since=now, worker=worker, attempts=Delivery.attempts + 1)
            ).rowcount
            if taken:
                obj = session.get(ResultObject, candidate.result_id)
                claimed.append(Claimed(
                    candidate.id, obj.path, obj.sop_class_uid, obj.sop_instance_uid,
                    attempts, candidate.created_at,
                ))
        return row.destination, series.calling_host if series is not None else None, claimed


def _send(settings: Settings, target: Target, rows: list[Claimed]) -> list[StoreOutcome]:
    if target.kind == "dicomweb":
        from node.deliver.dicomweb import stow

        return stow(target.url, [r.path for r in rows], timeout=settings.delivery.dimse_timeout)
    try:
        tls = (client_context(settings), target.host) if target.tls else None
    except ValueError as exc:  # bad certificate material: fails the attempt with the reason, like a peer error
        return [StoreOutcome(r.path, r.sop_class_uid, r.sop_instance_uid, failure=Failure.invalid, error=str(exc))
                for r in rows]
    return send_objects(
        [r.path for r in rows],
        target.ae_title,
        target.host,
        target.port,
        calling_ae_title=settings.node.ae_title,
        connect_timeout=settings.delivery.connect_timeout,
        acse_timeout=settings.delivery.connect_timeout,
        dimse_timeout=settings.delivery.dimse_timeout,
        network_timeout=settings.delivery.dimse_timeout,
        tls=tls,
    )


@dataclass
class Tally:
    """What one attempt recorded: a count per verdict, the SOP instances sent and not sent, the refused SEGs."""

    counts: dict[str, int] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    not_sent: list[str] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # delivery IDs whose SEG the destination refused


def _outcomes(settings: Settings, target: Target | None, destination: str, rows: list[Claimed]) -> list[StoreOutcome]:
    if target is not None:
        return _send(settings, target, rows)
    message = f"destination {destination!r} is not configured (or the sender's address is unknown)"
    return [StoreOutcome(r.path, r.sop_class_uid, r.sop_instance_uid, failure=Failure.invalid, error=message)
            for r in rows]


def _judge(settings: Settings, session: Session, destination: str, row: Claimed, outcome: StoreOutcome,
           now: dt.datetime) -> tuple[Decision, dict[str, object]]:
    """The verdict on one row's attempt and the column values that record it."""
    decision = decide(outcome, settings.delivery, row.attempts, row.created_at, now)  # type: ignore[arg-type]
    values: dict[str, object] = {"last_status": decision.last_status, "error": decision.error or None,
                                 "sending_since": None, "worker": None}
    if is_seg_refusal(row.sop_class_uid, outcome.failure is Failure.not_accepted):
        record_refusal(session, destination, row.sop_class_uid, outcome.error)
        decision = replace(decision, verdict=Verdict.replaced)
        values.update(state=DeliveryState.replaced, next_attempt_at=None,
                      error=f"{replaced_note(destination, row.sop_class_uid)} ({outcome.error})")
    elif decision.verdict is Verdict.delivered:
        values.update(state=DeliveryState.delivered, delivered_at=now, next_attempt_at=None)
        if row.sop_class_uid in SEG_SOP_CLASSES:
            forget_refusal(session, destination, row.sop_class_uid)
    elif decision.verdict is Verdict.failed:
        values.update(state=DeliveryState.failed, next_attempt_at=None)
    else:
        values.update(state=DeliveryState.pending, next_attempt_at=decision.next_attempt_at)
    return decision, values


def _record(settings: Settings, session: Session, destination: str, worker: str, rows: list[Claimed],
            outcomes: list[StoreOutcome]) -> Tally:
    """Record each row's outcome, if this sender still holds the row."""
    tally, now = Tally(), utcnow()
    for row, outcome in zip(rows, outcomes):
        decision, values = _judge(settings, session, destination, row, outcome, now)
        kept = session.execute(
            update(Delivery)
            .where(Delivery.id == row.delivery_id, Delivery.state == DeliveryState.sending, Delivery.worker == worker)
            .values(**values)
        ).rowcount
        if not kept:
            log.warning("delivery %s: was reset while sending; its outcome is not recorded", row.delivery_id)
            continue
        verdict = decision.verdict
        tally.counts[verdict.value] = tally.counts.get(verdict.value, 0) + 1
        (tally.sent if verdict is Verdict.delivered else tally.not_sent).append(row.sop_instance_uid)
        if verdict is Verdict.replaced:
            tally.refused.append(row.delivery_id)
        level = logging.INFO if verdict is Verdict.delivered else logging.WARNING
        log.log(level, "delivery %s (%s to %s, attempt %d): %s %s", row.delivery_id, row.sop_instance_uid,
                destination, row.attempts, verdict.value, decision.error or decision.last_status)
        if verdict is Verdict.failed:
            record_event(session, "delivery_failed", f"delivery {row.delivery_id} to {destination}: {decision.error}"[:2000],
                         uid=row.sop_instance_uid)
    return tally


def deliver(settings: Settings, database: Database, delivery_id: int) -> dict[str, int]:
    """Attempt delivery ``delivery_id`` (and its pending siblings); returns a count per verdict."""
    worker = worker_identity()
    destination, calling_host, rows = _claim(database, delivery_id, worker)
    if not rows:
        log.info("delivery %s: not pending (done, or taken by another sender); nothing to do", delivery_id)
        return {}
    target = resolve_target(settings, destination, calling_host)
    outcomes = _outcomes(settings, target, destination, rows)
    with database.session() as session:
        keep_commit_sync(session)  # the audit record of objects sent: a re-send would not restore it
        tally = _record(settings, session, destination, worker, rows, outcomes)
        audit.delivery_attempted(
            session, destination=destination, destination_ae_title=target.ae_title if target else None,
            destination_host=(target.host or target.url)[:64] if target else None, local_ae_title=settings.node.ae_title,
            sent=tally.sent, not_sent=tally.not_sent,
            detail="; ".join(sorted({o.error for o in outcomes if o.error}))[:500] or None,
        )
    if tally.refused:
        build = partial(write_late_fallback, settings, database)
        enqueue_groups(settings, database, send_fallback_instead(database, destination, tally.refused, build=build))
    return tally.counts
