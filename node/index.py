"""Indexing received instances: idempotent upserts of study, series and instance rows.

Several receiving processes write concurrently, so every insert is ``ON CONFLICT DO NOTHING``
(SQLite and PostgreSQL) followed by targeted updates; a re-sent instance adds no row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import event, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from node.db import Database, Instance, Series, SeriesState, Study, utcnow
from node.receive_dataset import Identifiers

log = logging.getLogger(__name__)

REOPENABLE = (SeriesState.complete, SeriesState.routed, SeriesState.unrouted)


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


def _insert(session: Session, model: type, values: dict) -> bool:
    """Insert a row unless its primary key exists; True when a row was added."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(model).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(model).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - other engines are not supported
        raise RuntimeError(f"unsupported database dialect {dialect!r}: use SQLite or PostgreSQL")
    # RETURNING rather than rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
    key = model.__table__.primary_key.columns.values()[0]
    return session.execute(statement.returning(key)).first() is not None


class KnownSeries:
    """Series this process has already inserted (bounded, oldest forgotten first).

    Lets the hot path skip the study and series upserts for the 2nd..nth instance of a series.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, series_uid: object) -> bool:
        return series_uid in self._seen

    def discard(self, series_uid: str) -> None:
        self._seen.pop(series_uid, None)

    def add(self, series_uid: str) -> None:
        self._seen[series_uid] = None
        self._seen.move_to_end(series_uid)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


def record_instance(session: Session, item: Received, known: KnownSeries | None = None) -> bool:
    """Index a stored instance; True when it is new, False for an idempotent re-send.

    A new instance for a series already complete (or routed) reopens it to ``receiving``: it completes
    again after the quiet period and is routed again (its jobs are reset by the dispatcher).
    ``known`` (optional) remembers series whose study and series rows exist, to skip their upserts.
    """
    now = utcnow()
    ids = item.ids
    if known is None or ids.series_uid not in known:
        _upsert_study_and_series(session, item, now)
    added = _insert(
        session,
        Instance,
        {
            "sop_instance_uid": ids.sop_instance_uid,
            "series_uid": ids.series_uid,
            "sop_class_uid": ids.sop_class_uid,
            "transfer_syntax_uid": item.transfer_syntax_uid,
            "path": item.path,
            "size_bytes": item.size_bytes,
            "calling_ae_title": item.calling_ae_title,
            "called_ae_title": item.called_ae_title,
            "received_at": now,
        },
    )
    if not added:
        # Same SOP Instance UID again: the file was replaced in place; refresh its metadata only.
        session.execute(
            update(Instance)
            .where(Instance.sop_instance_uid == ids.sop_instance_uid)
            .values(size_bytes=item.size_bytes, transfer_syntax_uid=item.transfer_syntax_uid, received_at=now)
        )
        session.execute(update(Series).where(Series.series_uid == ids.series_uid).values(last_received_at=now))
        return False
    reopened = session.execute(
        update(Series)
        .where(Series.series_uid == ids.series_uid, Series.state.in_(REOPENABLE))
        .values(state=SeriesState.receiving, completed_at=None, state_reason="reopened by a late instance")
    ).rowcount
    if reopened:
        log.info("series %s reopened by late instance %s", ids.series_uid, ids.sop_instance_uid)
    session.execute(
        update(Series)
        .where(Series.series_uid == ids.series_uid)
        .values(instance_count=Series.instance_count + 1, last_received_at=now)
    )
    return True


def _upsert_study_and_series(session: Session, item: Received, now: dt.datetime) -> None:
    ids = item.ids
    if not _insert(
        session,
        Study,
        {"study_uid": ids.study_uid, "accession_number": ids.accession_number, "first_received_at": now,
         "last_received_at": now},
    ):
        session.execute(update(Study).where(Study.study_uid == ids.study_uid).values(last_received_at=now))
    _insert(
        session,
        Series,
        {
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
        },
    )


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
