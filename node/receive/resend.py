"""A second instance with a SOP Instance UID already stored, under ``node.duplicate_instances``.

- ``keep`` (the default, what PACS do: Orthanc's ``OverwriteInstances`` is off by default): the stored copy
  stays, the sender gets Success (it did its part; a failure would make it send again and again);
- ``replace``: the new copy replaces the stored one and its series is reopened, so it completes again and its
  jobs run again (their results replace the earlier ones at the destinations);
- ``refuse``: the sender gets 0x0111 Duplicate SOP Instance and the stored copy stays.

A copy identical to the stored one (the same data set bytes, as a sender retrying after a lost response sends)
is never a change: under ``replace`` it is kept and nothing reopens. Either way, each association's re-sent
instances of a series are recorded as one ``instances_resent`` event and one log line, naming the series, the
sender, the policy and how many were identical.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from node.db import Database, record_event

log = logging.getLogger(__name__)

POLICIES = ("keep", "replace", "refuse")
_DONE = {"keep": "kept the stored copies", "replace": "replaced the stored copies and reopened the series",
         "refuse": "refused them (0x0111 Duplicate SOP Instance)"}


@dataclass(frozen=True)
class Resend:
    """What to do with a re-sent instance: ``store`` it (replacing the stored copy, then ``reopen``), ``keep``
    the stored copy (answering Success) or ``refuse`` it; ``identical`` when its data set is the stored one's."""

    action: str
    identical: bool
    reopen: bool = False


@dataclass
class ResentCounts:
    """Re-sent instances of one series in one association."""

    count: int = 0
    identical: int = 0


def same_data_set(path: Path, stream: bytes | bytearray) -> bool:
    """True when the file at ``path`` holds ``stream`` as its data set (after the file meta header we wrote)."""
    try:
        if path.stat().st_size < len(stream):
            return False
        with open(path, "rb") as handle:
            handle.seek(-len(stream), 2)
            return handle.read() == stream
    except OSError:
        return False


def decide(policy: str, path: Path, stream: bytes | bytearray) -> Resend | None:
    """The decision for an instance whose file would be ``path``; None when it is not stored yet."""
    if not path.exists():
        return None
    identical = same_data_set(path, stream)
    if policy == "refuse":
        return Resend("refuse", identical)
    if policy == "replace" and not identical:
        return Resend("store", identical, reopen=True)
    return Resend("keep", identical)


def record_resent(database: Database, policy: str, calling_ae_title: str, calling_host: str,
                  by_series: dict[str, ResentCounts]) -> None:
    """One event and one log line per series whose instances an association sent again; never raises."""
    for series_uid, counts in by_series.items():
        message = (f"{counts.count} instance(s) of series {series_uid} already stored were sent again by "
                   f"{calling_ae_title}@{calling_host} ({counts.identical} identical to the stored copy): "
                   f"{_DONE[policy]} (node.duplicate_instances: {policy})")
        log.warning("%s", message)
        try:
            with database.session() as session:
                record_event(session, "instances_resent", message[:2000], level="warning",
                             calling_ae_title=calling_ae_title[:16], uid=series_uid)
        except Exception:  # the receiver must keep serving
            log.exception("cannot record re-sent instances of series %s", series_uid)
