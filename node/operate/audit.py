"""IHE ATNA-style audit trail: who sent what, where results went, what was refused or removed.

Each event is a row in ``audit_events`` and one log line on the ``pacsnode.audit`` logger. Only AE titles,
addresses, UIDs, counts and sizes are recorded: never patient names, IDs or birth dates.
Event names follow the ATNA (DICOM PS3.15 A.5) event IDs they stand for.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db import AuditEvent, Database, ResultObject

log = logging.getLogger("pacsnode.audit")

MAX_UIDS_PER_EVENT = 1000  # keep one row bounded; the count still says how many there were


class Outcome(enum.IntEnum):
    """ATNA EventOutcomeIndicator."""

    success = 0
    minor_failure = 4
    serious_failure = 8
    major_failure = 12


INSTANCES_RECEIVED = "dicom-instances-received"  # ATNA "DICOM Instances Transferred" (110104), import
RESULTS_DELIVERED = "dicom-instances-sent"  # ATNA "DICOM Instances Transferred" (110104), export
ASSOCIATION_REJECTED = "association-rejected"  # ATNA "Security Alert" (110113) / node authentication
DATA_REMOVED = "dicom-study-deleted"  # ATNA "DICOM Study Deleted" (110105)
DASHBOARD_LOGIN = "user-authentication"  # ATNA "User Authentication" (110114)


def _clip(value: str | None, length: int) -> str | None:
    return value.strip()[:length] if value else value


def _record(database: Database | Session, row: AuditEvent) -> None:
    for column, length in (("source_ae_title", 16), ("destination_ae_title", 16), ("source_host", 64),
                           ("destination_host", 64), ("study_uid", 64), ("series_uid", 64)):
        setattr(row, column, _clip(getattr(row, column), length))
    if isinstance(database, Session):
        database.add(row)
    else:
        with database.session() as session:
            session.add(row)
    log.info(
        "audit %s outcome=%d source=%s@%s destination=%s@%s study=%s series=%s instances=%d bytes=%d%s",
        row.event,
        row.outcome,
        row.source_ae_title or "-",
        row.source_host or "-",
        row.destination_ae_title or "-",
        row.destination_host or "-",
        row.study_uid or "-",
        row.series_uid or "-",
        row.instance_count,
        row.size_bytes,
        f" detail={row.detail}" if row.detail else "",
        extra={
            "audit_event": row.event,
            "study_uid": row.study_uid,
            "series_uid": row.series_uid,
            "calling_ae_title": row.source_ae_title,
        },
    )


def instances_received(
    database: Database | Session,
    *,
    calling_ae_title: str,
    calling_host: str | None,
    called_ae_title: str,
    study_uid: str | None,
    series_uid: str | None,
    sop_instance_uids: Sequence[str],
    size_bytes: int,
    association_id: str | None = None,
    outcome: Outcome = Outcome.success,
    detail: str | None = None,
) -> None:
    """Record that ``calling_ae_title`` at ``calling_host`` stored these instances (one call per series and
    association, when the association ends; ``association_id`` groups them)."""
    _record(
        database,
        AuditEvent(
            event=INSTANCES_RECEIVED,
            association_id=association_id,
            action="C",
            outcome=int(outcome),
            source_ae_title=calling_ae_title,
            source_host=calling_host,
            destination_ae_title=called_ae_title,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_instance_uids=list(sop_instance_uids)[:MAX_UIDS_PER_EVENT],
            instance_count=len(sop_instance_uids),
            size_bytes=size_bytes,
            detail=detail,
        ),
    )


def results_delivered(
    database: Database | Session,
    *,
    destination: str,
    destination_ae_title: str | None,
    destination_host: str | None,
    study_uid: str | None,
    series_uid: str | None,
    sop_instance_uids: Sequence[str],
    size_bytes: int = 0,
    outcome: Outcome = Outcome.success,
    detail: str | None = None,
    local_ae_title: str | None = None,
) -> None:
    """Record that result objects went (or failed to go: ``outcome``) to ``destination``."""
    _record(
        database,
        AuditEvent(
            event=RESULTS_DELIVERED,
            action="R",
            outcome=int(outcome),
            source_ae_title=local_ae_title,
            destination_ae_title=destination_ae_title,
            destination_host=destination_host,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_instance_uids=list(sop_instance_uids)[:MAX_UIDS_PER_EVENT],
            instance_count=len(sop_instance_uids),
            size_bytes=size_bytes,
            detail=f"destination={destination}" + (f"; {detail}" if detail else ""),
        ),
    )


def association_rejected(
    database: Database | Session,
    *,
    calling_ae_title: str | None,
    calling_host: str | None,
    called_ae_title: str | None,
    reason: str,
    association_id: str | None = None,
) -> None:
    """Record a refused association (unknown AE, wrong host, disk guard, too many associations)."""
    _record(
        database,
        AuditEvent(
            event=ASSOCIATION_REJECTED,
            association_id=association_id,
            action="E",
            outcome=int(Outcome.minor_failure),
            source_ae_title=calling_ae_title,
            source_host=calling_host,
            destination_ae_title=called_ae_title,
            detail=reason,
        ),
    )


def data_removed(
    database: Database | Session,
    *,
    study_uid: str | None,
    series_uid: str | None,
    instance_count: int,
    size_bytes: int,
    reason: str,
) -> None:
    """Record that retention removed a series' instances and results."""
    _record(
        database,
        AuditEvent(
            event=DATA_REMOVED,
            action="D",
            outcome=int(Outcome.success),
            study_uid=study_uid,
            series_uid=series_uid,
            instance_count=instance_count,
            size_bytes=size_bytes,
            detail=reason,
        ),
    )


def dashboard_login(database: Database | Session, *, client_host: str | None, success: bool,
                    detail: str | None = None) -> None:
    """Record a dashboard login attempt (the token itself is never recorded)."""
    _record(
        database,
        AuditEvent(
            event=DASHBOARD_LOGIN,
            action="E",
            outcome=int(Outcome.success if success else Outcome.minor_failure),
            source_host=client_host,
            detail=detail or "dashboard token login",
        ),
    )


def association_ended(
    database: Database,
    *,
    calling_ae_title: str,
    calling_host: str | None,
    called_ae_title: str,
    association_id: str,
    received: Sequence[tuple[str, str, str, int]],
) -> None:
    """Record one association's stored instances, one event per series; ``received`` holds
    (study UID, series UID, SOP Instance UID, bytes). Never raises: a receiver must keep serving."""
    by_series: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for study_uid, series_uid, sop_uid, size in received:
        by_series.setdefault((study_uid, series_uid), []).append((sop_uid, size))
    try:
        with database.session() as session:
            for (study_uid, series_uid), items in by_series.items():
                instances_received(
                    session,
                    calling_ae_title=calling_ae_title,
                    calling_host=calling_host,
                    called_ae_title=called_ae_title,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    sop_instance_uids=[uid for uid, _ in items],
                    size_bytes=sum(size for _, size in items),
                    association_id=association_id,
                )
    except Exception:
        log.exception("cannot record the audit events of association %s", association_id)


def delivery_attempted(
    session: Session,
    *,
    destination: str,
    destination_ae_title: str | None,
    destination_host: str | None,
    local_ae_title: str,
    sent: Sequence[str],
    not_sent: Sequence[str],
    detail: str | None = None,
) -> None:
    """Record one delivery attempt: the result objects (SOP Instance UIDs) that went and those that did not."""
    uids = list(sent) + list(not_sent)
    rows = session.execute(
        select(ResultObject.sop_instance_uid, ResultObject.study_uid, ResultObject.size_bytes).where(
            ResultObject.sop_instance_uid.in_(uids)
        )
    ).all()
    study_uid = rows[0].study_uid if rows else None
    sizes = {row.sop_instance_uid: row.size_bytes for row in rows}
    for group, outcome in ((sent, Outcome.success), (not_sent, Outcome.serious_failure)):
        if group:
            results_delivered(
                session,
                destination=destination,
                destination_ae_title=destination_ae_title,
                destination_host=destination_host,
                study_uid=study_uid,
                series_uid=None,
                sop_instance_uids=group,
                size_bytes=sum(sizes.get(uid, 0) for uid in group),
                outcome=outcome,
                detail=None if outcome is Outcome.success else detail,
                local_ae_title=local_ae_title,
            )
