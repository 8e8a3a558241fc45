"""Indexing received instances: idempotent upserts of study, series and instance rows.

Several receiving processes write concurrently, so every insert is ``ON CONFLICT DO NOTHING``
(SQLite and PostgreSQL) followed by targeted updates; a re-sent instance adds no row. The statements
are built once per dialect and run on a Core connection: building them per instance through the ORM
cost about 1.5 ms, more than the durable write of the file.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

from sqlalchemy import Connection, bindparam, event, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, Update

from node.db import Database, Instance, Series, SeriesState, Study, utcnow
from node.receive_dataset import Identifiers

log = logging.getLogger(__name__)

REOPENABLE = (SeriesState.complete, SeriesState.routed, SeriesState.unrouted)
REOPENED_REASON = "reopened by a late instance"


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


@dataclass(frozen=True)
class _Statements:
    """The index statements of one SQL dialect, with bound parameters (built once, compiled once)."""

    insert_study: Insert
    touch_study: Update
    insert_series: Insert
    insert_instance: Insert
    refresh_instance: Update
    touch_series: Update
    reopen_series: Update
    count_instance: Update


def _insert_ignoring_duplicates(dialect: str, model: type) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING key``: a row back means it was added.

    RETURNING rather than rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
    """
    if dialect == "postgresql":
        statement = postgresql.insert(model).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(model).on_conflict_do_nothing()
    else:  # pragma: no cover - other engines are not supported
        raise RuntimeError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")
    key = model.__table__.primary_key.columns.values()[0]
    return statement.returning(key)


@cache
def _statements(dialect: str) -> _Statements:
    return _Statements(
        insert_study=_insert_ignoring_duplicates(dialect, Study),
        touch_study=update(Study).where(Study.study_uid == bindparam("key")).values(
            last_received_at=bindparam("now")),
        insert_series=_insert_ignoring_duplicates(dialect, Series),
        insert_instance=_insert_ignoring_duplicates(dialect, Instance),
        refresh_instance=update(Instance).where(Instance.sop_instance_uid == bindparam("key")).values(
            size_bytes=bindparam("size"), transfer_syntax_uid=bindparam("syntax"), received_at=bindparam("now")),
        touch_series=update(Series).where(Series.series_uid == bindparam("key")).values(
            last_received_at=bindparam("now")),
        reopen_series=update(Series).where(Series.series_uid == bindparam("key"), Series.state.in_(REOPENABLE))
        .values(state=SeriesState.receiving, completed_at=None, state_reason=REOPENED_REASON),
        count_instance=update(Series).where(Series.series_uid == bindparam("key")).values(
            instance_count=Series.instance_count + 1, last_received_at=bindparam("now")),
    )


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

    ``target`` is an ORM session or a Core connection inside a transaction; the caller commits.
    A new instance for a series already complete (or routed) reopens it to ``receiving``: it completes
    again after the quiet period and is routed again (its jobs are reset by the dispatcher).
    ``known`` (optional) remembers series whose study and series rows exist, to skip their upserts.
    """
    connection = target.connection() if isinstance(target, Session) else target
    sql = _statements(connection.dialect.name)
    now = utcnow()
    ids = item.ids
    if known is None or ids.series_uid not in known:
        _upsert_study_and_series(connection, sql, item, now)
    added = connection.execute(sql.insert_instance, {
        "sop_instance_uid": ids.sop_instance_uid,
        "series_uid": ids.series_uid,
        "sop_class_uid": ids.sop_class_uid,
        "transfer_syntax_uid": item.transfer_syntax_uid,
        "path": item.path,
        "size_bytes": item.size_bytes,
        "calling_ae_title": item.calling_ae_title,
        "called_ae_title": item.called_ae_title,
        "received_at": now,
    }).first() is not None
    if not added:
        # Same SOP Instance UID again: the file was replaced in place; refresh its metadata only.
        connection.execute(sql.refresh_instance, {"key": ids.sop_instance_uid, "size": item.size_bytes,
                                                  "syntax": item.transfer_syntax_uid, "now": now})
        connection.execute(sql.touch_series, {"key": ids.series_uid, "now": now})
        return False
    if connection.execute(sql.reopen_series, {"key": ids.series_uid}).rowcount:
        log.info("series %s reopened by late instance %s", ids.series_uid, ids.sop_instance_uid)
    connection.execute(sql.count_instance, {"key": ids.series_uid, "now": now})
    return True


def _upsert_study_and_series(connection: Connection, sql: _Statements, item: Received, now: dt.datetime) -> None:
    ids = item.ids
    study = {"study_uid": ids.study_uid, "accession_number": ids.accession_number, "first_received_at": now,
             "last_received_at": now}
    if connection.execute(sql.insert_study, study).first() is None:
        connection.execute(sql.touch_study, {"key": ids.study_uid, "now": now})
    connection.execute(sql.insert_series, {
        "series_uid": ids.series_uid,
        "study_uid": ids.study_uid,
        "modality": ids.modality,
        "state": SeriesState.receiving,
        "calling_ae_title": item.calling_ae_title,
        "called_ae_title": item.called_ae_title,
        "calling_host": item.calling_host,
        "instance_count": 0,
        "first_received_at": now,
        "last_received_at": now,
    })


def relax_commit_sync(database: Database) -> None:
    """Commit without waiting for the index's own disk sync (``node.index_fsync: false``).

    The instance file is still fsynced before Success; `serve` re-indexes lost rows at start.
    """
    dialect = database.engine.dialect.name

    def on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        if dialect == "sqlite":
            cursor.execute("PRAGMA synchronous=NORMAL")
        elif dialect == "postgresql":
            cursor.execute("SET synchronous_commit TO OFF")
        cursor.close()
        if dialect == "postgresql":
            dbapi_connection.commit()

    event.listen(database.engine, "connect", on_connect)
