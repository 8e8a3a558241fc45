"""Output profiles and the fallback for destinations that cannot take a SEG.

A destination's ``outputs`` names what it receives: ``seg``, ``sr``, ``kos`` (the Key Object Selection of
the job's key slices) and/or ``fallback`` (the Secondary Capture key slices, result kinds ``fallback-1``,
``fallback-2``...). A job writes its KOS only when one of its destinations lists ``kos``. When a destination
refuses the SEG SOP class at association, the refusal is recorded (table ``destination_refusals``), the SEG
delivery becomes ``replaced``, and the job's fallback images are sent to that destination instead, once.
Later jobs send the fallback to it straight away, until ``delivery.refusal_retry_hours`` after its last refusal:
then the next job offers it the SEG again (a destination may have been upgraded). Accepted, the refusal is
forgotten; refused again, the fallback is sent as the first time and the wait starts again. `pacsnode status`
shows the replaced deliveries and the refusal event.

A job builds its fallback images with its SEG and SR only when one of its destinations asks for them or is
known to refuse SEG (``fallback_needed``); most jobs need none, and building them costs a good part of a
second. When a destination refuses SEG for the first time and the job has none, they are built then from the
stored series and the job's SEG (``node.deliver.late_fallback``), with the same UIDs.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection, Sequence

from highdicom.seg import SOP_CLASS_UIDS as SEGMENTATION_SOP_CLASSES
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import (
    Database,
    Delivery,
    DeliveryState,
    DestinationRefusal,
    Job,
    ResultObject,
    record_event,
    utcnow,
)
from node.deliver.targets import job_targets

log = logging.getLogger(__name__)

SEG_SOP_CLASSES = frozenset(SEGMENTATION_SOP_CLASSES)
"""Binary/fractional and label map Segmentation storage (highdicom's table)."""
FALLBACK = "fallback"
KEY_OBJECTS = "kos"


def output_of(kind: str) -> str:
    """The output profile name of a result kind: ``fallback-3`` -> ``fallback``, ``seg`` -> ``seg``."""
    return kind.split("-", 1)[0]


def refused_classes(settings: Settings, session: Session, destination: str) -> set[str]:
    """SOP classes ``destination`` has refused at association, except those due to be offered again (refused
    longer than ``delivery.refusal_retry_hours`` ago)."""
    query = select(DestinationRefusal.sop_class_uid).where(DestinationRefusal.destination == destination)
    hours = settings.delivery.refusal_retry_hours
    if hours > 0:
        query = query.where(DestinationRefusal.last_refused_at >= utcnow() - dt.timedelta(hours=hours))
    return set(session.scalars(query).all())


def plan(outputs: Collection[str], results: Sequence[ResultObject], refused: Collection[str]) -> tuple[list, list]:
    """Which of a job's results go to a destination: (to send, replaced by the fallback).

    A SEG whose SOP class the destination refused is replaced by the fallback images when the job has them;
    without fallback images it is sent anyway (and will fail with the refusal's reason).
    """
    has_fallback = any(output_of(r.kind) == FALLBACK for r in results)
    replaced = [
        r for r in results
        if output_of(r.kind) in outputs and r.sop_class_uid in SEG_SOP_CLASSES and r.sop_class_uid in refused
        and has_fallback
    ]
    wanted = set(outputs) | ({FALLBACK} if replaced else set())
    send = [r for r in results if output_of(r.kind) in wanted and r not in replaced]
    return send, replaced


def replaced_note(destination: str, sop_class_uid: str) -> str:
    return (
        f"{destination} does not accept SOP class {sop_class_uid} (SEG); its fallback key images were sent "
        f"instead. Once it supports SEG: `pacsnode refusals --clear {destination}`."
    )


def is_seg_refusal(sop_class_uid: str, not_accepted: bool) -> bool:
    """True when a delivery outcome is the destination refusing a SEG SOP class at association."""
    return not_accepted and sop_class_uid in SEG_SOP_CLASSES


def record_refusal(session: Session, destination: str, sop_class_uid: str, detail: str) -> None:
    """Remember that ``destination`` refused ``sop_class_uid`` (upsert)."""
    row = session.scalars(
        select(DestinationRefusal).where(
            DestinationRefusal.destination == destination, DestinationRefusal.sop_class_uid == sop_class_uid
        )
    ).first()
    if row is None:
        session.add(DestinationRefusal(destination=destination, sop_class_uid=sop_class_uid, detail=detail[:2000]))
        log.warning("destination %s refused SOP class %s at association; it gets the fallback from now on",
                    destination, sop_class_uid)
    else:
        row.last_refused_at, row.detail = utcnow(), detail[:2000]


def forget_refusal(session: Session, destination: str, sop_class_uid: str) -> None:
    """``destination`` accepted ``sop_class_uid``: forget a refusal of it, if one was recorded."""
    forgotten = session.execute(
        delete(DestinationRefusal).where(
            DestinationRefusal.destination == destination, DestinationRefusal.sop_class_uid == sop_class_uid
        )
    ).rowcount
    if forgotten:
        log.info("destination %s accepted SOP class %s, refused before; it gets SEG again from now on",
                 destination, sop_class_uid)


def wanted_outputs(settings: Settings, database: Database, job_id: int) -> set[str]:
    """The outputs job ``job_id``'s destinations want: every ``outputs`` entry of the destinations its results
    go to, and ``fallback`` for one that has refused a SEG SOP class before (it gets the fallback instead)."""
    wanted: set[str] = set()
    with database.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return wanted
        for target in job_targets(settings, session, job, report=False):
            wanted |= set(target.outputs)
            if refused_classes(settings, session, target.name) & SEG_SOP_CLASSES:
                wanted.add(FALLBACK)
    return wanted


def fallback_needed(settings: Settings, database: Database, job_id: int) -> bool:
    """Whether job ``job_id`` should build its fallback images with its results: one of its destinations lists
    ``fallback`` in its outputs, or has refused a SEG SOP class before (it gets the fallback instead)."""
    return FALLBACK in wanted_outputs(settings, database, job_id)


def _jobs_of(session: Session, delivery_ids: Sequence[int]) -> set[int]:
    """The jobs whose result objects these deliveries carry."""
    return set(session.scalars(
        select(ResultObject.job_id)
        .join(Delivery, Delivery.result_id == ResultObject.id)
        .where(Delivery.id.in_(delivery_ids))
    ).all())


def _jobs_without_fallback(database: Database, delivery_ids: Sequence[int]) -> list[int]:
    with database.session() as session:
        job_ids = _jobs_of(session, delivery_ids)
        kinds = session.execute(
            select(ResultObject.job_id, ResultObject.kind).where(ResultObject.job_id.in_(job_ids))
        ).all()
    with_fallback = {job_id for job_id, kind in kinds if output_of(kind) == FALLBACK}
    return sorted(job_ids - with_fallback)


def send_fallback_instead(
    database: Database,
    destination: str,
    refused_delivery_ids: Sequence[int],
    build: Callable[[int], object] | None = None,
) -> list[int]:
    """Create (once) the fallback deliveries of the jobs behind ``refused_delivery_ids``; their new IDs.

    ``build(job_id)`` first writes and registers the fallback images of each such job that has none (see
    ``node.deliver.late_fallback``). Existing fallback deliveries to ``destination`` are left as they are, so
    the fallback goes out once.
    """
    if build is not None:
        for job_id in _jobs_without_fallback(database, refused_delivery_ids):
            build(job_id)
    created: list[int] = []
    with database.session() as session:
        job_ids = _jobs_of(session, refused_delivery_ids)
        for job_id in sorted(job_ids):
            results = session.scalars(select(ResultObject).where(ResultObject.job_id == job_id)).all()
            fallback = [r for r in results if output_of(r.kind) == FALLBACK]
            if not fallback:
                message = f"job {job_id}: {destination} refused the SEG and the job has no fallback images to send"
                log.error(message)
                record_event(session, "seg_refused", message, uid=results[0].series_uid if results else None)
                continue
            for result in fallback:
                exists = session.scalars(
                    select(Delivery.id).where(Delivery.result_id == result.id, Delivery.destination == destination)
                ).first()
                if exists is None:
                    row = Delivery(result_id=result.id, destination=destination, state=DeliveryState.pending,
                                   next_attempt_at=utcnow())
                    session.add(row)
                    session.flush()
                    created.append(row.id)
            record_event(
                session, "seg_refused",
                f"job {job_id}: {destination} refused the SEG at association; sent {len(fallback)} fallback key "
                "image(s) instead",
                level="warning", uid=fallback[0].series_uid,
            )
    log.info("destination %s: %d fallback deliveries created instead of a refused SEG", destination, len(created))
    return created


def list_refusals(database: Database) -> list[DestinationRefusal]:
    """Every recorded refusal, by destination."""
    with database.session() as session:
        return list(session.scalars(
            select(DestinationRefusal).order_by(DestinationRefusal.destination, DestinationRefusal.sop_class_uid)
        ).all())


def clear_refusals(database: Database, destination: str) -> int:
    """Forget ``destination``'s refusals, so its next jobs try the SEG again; how many were removed."""
    with database.session() as session:
        rows = session.scalars(select(DestinationRefusal).where(DestinationRefusal.destination == destination)).all()
        for row in rows:
            session.delete(row)
    log.info("destination %s: %d refusal(s) cleared; SEG will be offered again", destination, len(rows))
    return len(rows)
