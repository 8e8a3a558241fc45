"""Indexing received instances: idempotent upserts of study, series and instance rows, and the evidence of
which associations carried each series (what series assembly judges completion by).

Several receiving processes write concurrently, so every insert is ``ON CONFLICT DO NOTHING``
(SQLite and PostgreSQL) followed by targeted updates; a re-sent instance adds no row. The few
statements are plain SQL run on the driver's connection inside the caller's transaction: an order of
magnitude cheaper per instance than through SQLAlchemy's Core, and more so than through its ORM.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, update
from sqlalchemy.orm import Session

from node.db import AssociationOutcome, Database, SeriesAssociation, SeriesState, utcnow
from node.receive.dataset import Identifiers

log = logging.getLogger(__name__)

REOPENABLE = (SeriesState.complete, SeriesState.routed, SeriesState.unrouted)
REOPENED_REASON = "reopened by a late instance"
_REOPENABLE_SQL = ", ".join(f"'{state.value}'" for state in REOPENABLE)

# One text per statement with :name parameters (SQLite's style; PostgreSQL's %(name)s is derived).
# RETURNING rather than rowcount tells an added row from a duplicate: psycopg reports -1 for ON CONFLICT.
_SQL = {
    "insert_study": "INSERT INTO studies (study_uid, accession_number, first_received_at, last_received_at) "
                    "VALUES (:study_uid, :accession_number, :now, :now) ON CONFLICT DO NOTHING RETURNING study_uid",
    # A new series of a study makes the study incomplete again.
    "touch_study": "UPDATE studies SET last_received_at = :now, completed_at = NULL WHERE study_uid = :study_uid",
    "insert_series": "INSERT INTO series (series_uid, study_uid, modality, state, calling_ae_title, called_ae_title, "
                     "calling_host, instance_count, reopen_count, first_received_at, last_received_at) VALUES "
                     "(:series_uid, :study_uid, :modality, :state, :calling_ae_title, :called_ae_title, "
                     ":calling_host, 0, 0, :now, :now) ON CONFLICT DO NOTHING",
    "link_association": "INSERT INTO series_associations (association_id, series_uid, first_at) VALUES "
                        "(:association_id, :series_uid, :now) ON CONFLICT DO NOTHING",
    "insert_instance": "INSERT INTO instances (sop_instance_uid, series_uid, sop_class_uid, transfer_syntax_uid, path, "
                       "size_bytes, calling_ae_title, called_ae_title, received_at) VALUES (:sop_instance_uid, "
                       ":series_uid, :sop_class_uid, :transfer_syntax_uid, :path, :size_bytes, :calling_ae_title, "
                       ":called_ae_title, :now) ON CONFLICT DO NOTHING RETURNING sop_instance_uid",
    "refresh_instance": "UPDATE instances SET size_bytes = :size_bytes, transfer_syntax_uid = :transfer_syntax_uid, "
                        "received_at = :now WHERE sop_instance_uid = :sop_instance_uid AND path = :path",
    "touch_series": "UPDATE series SET last_received_at = :now WHERE series_uid = :series_uid",
    "reopen_series": f"UPDATE series SET state = :state, completed_at = NULL, state_reason = :reason, "
                     f"reopen_count = reopen_count + 1, reopened_at = :now "
                     f"WHERE series_uid = :series_uid AND state IN ({_REOPENABLE_SQL}) RETURNING study_uid, completed_by",
    "drop_ended_evidence": "DELETE FROM series_associations WHERE series_uid = :series_uid AND outcome IS NOT NULL",
    "reopen_study": "UPDATE studies SET completed_at = NULL WHERE study_uid = :study_uid",
    "record_reopening": "INSERT INTO events (at, level, kind, message, calling_ae_title, uid) VALUES "
                        "(:now, 'warning', 'series_reopened', :message, :calling_ae_title, :series_uid)",
    "count_instance": "UPDATE series SET instance_count = instance_count + 1, last_received_at = :now "
                      "WHERE series_uid = :series_uid",
}


@cache
def _statements(dialect: str) -> dict[str, str]:
    """The statements in the driver's parameter style."""
    if dialect == "sqlite":
        return dict(_SQL)
    if dialect == "postgresql":
        return {name: re.sub(r":([a-z_]+)", r"%(\1)s", text) for name, text in _SQL.items()}
    raise RuntimeError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")


def _timestamp(dialect: str, value: dt.datetime) -> Any:
    """``value`` as SQLAlchemy's DateTime stores it: SQLite keeps text with microseconds."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else value


@dataclass(frozen=True)
class Received:
    """One stored instance and where it came from."""

    ids: Identifiers
    transfer_syntax_uid: str
    path: str
    size_bytes: int
    calling_ae_title: str | None
    called_ae_title: str | None
    calling_host: str | None
    association_id: str | None = None  # the association that carried it (evidence of completion)
    first_in_association: bool = False  # its association's first instance of the series: record the link
    replaced: bool = False  # it replaced a stored copy (node.duplicate_instances: replace): reopen its series


class KnownSeries:
    """Series this process has already inserted (bounded, oldest forgotten first).

    Lets the hot path skip the study and series upserts for the 2nd..nth instance of a series.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()  # one receiving thread per association shares this

    def __contains__(self, series_uid: object) -> bool:
        return series_uid in self._seen

    def discard(self, series_uid: str) -> None:
        with self._lock:
            self._seen.pop(series_uid, None)

    def add(self, series_uid: str) -> None:
        with self._lock:
            self._seen[series_uid] = None
            self._seen.move_to_end(series_uid)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)


def record_instance(target: Session | Connection, item: Received, known: KnownSeries | None = None) -> bool:
    """Index a stored instance; True when it is new, False for an idempotent re-send.

    ``target`` is an ORM session or a Core connection; the statements join its transaction and the
    caller commits. A new instance for a series already complete (or routed) reopens it
    (``reopen_series``). The first instance of a series in an association links the two, as evidence
    for completion. ``known`` (optional) remembers series whose study and series rows exist, to skip
    their upserts.
    """
    connection = target.connection() if isinstance(target, Session) else target
    dialect = connection.dialect.name
    sql = _statements(dialect)
    ids = item.ids
    values = {
        "now": _timestamp(dialect, utcnow()),
        "study_uid": ids.study_uid,
        "series_uid": ids.series_uid,
        "sop_instance_uid": ids.sop_instance_uid,
        "sop_class_uid": ids.sop_class_uid,
        "transfer_syntax_uid": item.transfer_syntax_uid,
        "path": item.path,
        "size_bytes": item.size_bytes,
        "calling_ae_title": item.calling_ae_title,
        "called_ae_title": item.called_ae_title,
        "association_id": item.association_id,
    }
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if known is None or ids.series_uid not in known:
            _upsert_study_and_series(cursor, sql, item, values)
        if item.association_id and item.first_in_association:
            cursor.execute(sql["link_association"], values)
        cursor.execute(sql["insert_instance"], values)
        if not cursor.fetchall():
            # Same SOP Instance UID again: the file was kept or replaced in place; refresh its metadata only.
            cursor.execute(sql["refresh_instance"], values)
            cursor.execute(sql["touch_series"], values)
            if item.replaced:
                reopen_series(cursor, dialect, ids.series_uid, cause=f"replaced instance {ids.sop_instance_uid}",
                              calling_ae_title=item.calling_ae_title, now=values["now"])
            return False
        reopen_series(cursor, dialect, ids.series_uid, cause=f"new instance {ids.sop_instance_uid}",
                      calling_ae_title=item.calling_ae_title, now=values["now"])
        cursor.execute(sql["count_instance"], values)
        return True
    finally:
        cursor.close()


def reopen_series(cursor: Any, dialect: str, series_uid: str, *, cause: str, calling_ae_title: str | None,
                  now: Any = None) -> bool:
    """Reopen a series that was complete (or routed, unrouted) because ``cause`` changed it; True if it was.

    The series goes back to ``receiving`` and counts one more reopening; the association evidence of its
    earlier completion is dropped and its study is no longer complete; a ``series_reopened`` event names the
    cause, the sender and the rule that had declared the series complete, so that an administrator sees a
    sender the fast rule is wrong for. When the series completes again the dispatcher resets its jobs, and
    their results replace the earlier ones at the destinations (result UIDs derive from the job).

    Called for a new instance after completion; a policy that replaces a re-sent instance reopens through it
    too. ``cursor`` is a DB-API cursor inside the caller's transaction (``now`` as ``record_instance`` binds it).
    """
    sql = _statements(dialect)
    now = now if now is not None else _timestamp(dialect, utcnow())
    key = {"series_uid": series_uid, "now": now}
    cursor.execute(sql["reopen_series"], {**key, "state": SeriesState.receiving.value, "reason": REOPENED_REASON})
    reopened = cursor.fetchall()
    if not reopened:
        return False
    study_uid, completed_by = reopened[0]
    cursor.execute(sql["drop_ended_evidence"], key)
    cursor.execute(sql["reopen_study"], {"study_uid": study_uid})
    message = (f"series {series_uid} reopened by {cause} from {calling_ae_title or 'an unknown sender'}: it had "
               f"been declared complete by the {completed_by or 'unknown'} rule")
    cursor.execute(sql["record_reopening"], {**key, "message": message, "calling_ae_title": calling_ae_title})
    log.warning("%s", message)
    return True


def close_association_evidence(database: Database, association_id: str, outcome: str) -> None:
    """Record how an association that carried instances ended (``released`` or ``aborted``); never raises.

    Series assembly completes a series early only when every association that carried it was released. If
    this cannot be recorded, the association stays open in the index and its series fall back to the quiet
    period: later, never wrong.
    """
    ended = AssociationOutcome.released if outcome == "released" else AssociationOutcome.aborted
    try:
        with database.engine.begin() as connection:
            connection.execute(
                update(SeriesAssociation)
                .where(SeriesAssociation.association_id == association_id, SeriesAssociation.outcome.is_(None))
                .values(outcome=ended, ended_at=utcnow())
            )
    except Exception as exc:  # noqa: BLE001 - the database may be down; the quiet period still applies
        log.warning("association %s %s, but the index could not record it (%s: %s); its series complete after "
                    "their quiet period", association_id, ended.value, type(exc).__name__, exc)


def _upsert_study_and_series(cursor: Any, sql: dict[str, str], item: Received, values: dict[str, Any]) -> None:
    ids = item.ids
    cursor.execute(sql["insert_study"], {**values, "accession_number": ids.accession_number})
    if not cursor.fetchall():
        cursor.execute(sql["touch_study"], values)
    cursor.execute(sql["insert_series"], {**values, "modality": ids.modality, "state": SeriesState.receiving.value,
                                          "calling_host": item.calling_host})
