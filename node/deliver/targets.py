"""Where a job's results go: its configured destinations and, when a route asks, the calling AE's address.

One resolution for everything that needs it: the outbox creating delivery rows, the decision to build fallback
images, and each delivery attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from node.config import Settings
from node.db import Job, Series, record_event

log = logging.getLogger(__name__)

SENDER_PREFIX = "sender:"


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: a configured destination or a calling AE's known address."""

    name: str
    kind: str  # "dimse" or "dicomweb"
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""
    outputs: tuple[str, ...] = ("seg", "sr")
    tls: bool = False


def sender_destination(ae_title: str) -> str:
    """The Delivery.destination name of a reply to calling AE ``ae_title``."""
    return f"{SENDER_PREFIX}{ae_title}"


def resolve_target(settings: Settings, name: str, calling_host: str | None) -> Target | None:
    """The address behind a destination name; None when the configuration no longer knows it."""
    if name.startswith(SENDER_PREFIX):
        sender = settings.sender(name[len(SENDER_PREFIX):])
        if sender is None:
            return None
        host = sender.host or calling_host or ""
        if not host:
            return None
        return Target(name, "dimse", sender.ae_title, host, sender.port, outputs=tuple(sender.outputs))
    try:
        dest = settings.destination(name)
    except KeyError:
        return None
    return Target(name, dest.kind, dest.ae_title, dest.host, dest.port, dest.url, tuple(dest.outputs), dest.tls)


def wants_reply(settings: Settings, job: Job) -> bool:
    """Whether one of the routes that made ``job`` sends its results back to the calling AE."""
    return any(route.reply_to_sender for route in settings.routes if route.name in (job.routes or []))


def job_targets(settings: Settings, session: Session, job: Job, *, report: bool = True) -> list[Target]:
    """The job's destinations plus, when one of its routes asks for it, the calling AE's address.

    With ``report`` a destination that cannot be resolved is logged and recorded as an event.
    """
    series = session.get(Series, job.series_uid)
    calling_host = series.calling_host if series is not None else None
    targets: list[Target] = []
    for name in job.destinations or []:
        target = resolve_target(settings, name, calling_host)
        if target is not None:
            targets.append(target)
        elif report:
            log.error("job %s: destination %r is not configured; no delivery for it", job.id, name)
            record_event(session, "delivery_config", f"job {job.id}: unknown destination {name!r}", uid=job.series_uid)
    if wants_reply(settings, job):
        calling = (series.calling_ae_title if series is not None else None) or ""
        target = resolve_target(settings, sender_destination(calling), calling_host) if calling else None
        if target is None and report:
            message = (
                f"job {job.id}: reply_to_sender, but calling AE {calling or '(unknown)'!r} has no known address; "
                "declare it under `senders:` (ae_title, host, port)"
            )
            log.error(message)
            record_event(session, "delivery_config", message, calling_ae_title=calling or None, uid=job.series_uid)
        elif target is not None and target.name not in {t.name for t in targets}:
            targets.append(target)
    return targets
