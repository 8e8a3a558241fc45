"""Series assembly: a series is complete as soon as the evidence says so, else after its quiet period.

``tick`` runs periodically inside `pacsnode serve` and judges every ``receiving`` series whose last
instance is old enough for some rule (see ``node.assemble.evidence``); a study is complete once none of its
series is receiving. ``resume`` runs once at start: series a crash or restart left half-received get a fresh
quiet period and lose their association evidence (their senders may still be re-sending).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from functools import lru_cache

from pydicom.dataset import Dataset
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from node.config import Settings
from node.db import (
    AssociationOutcome,
    CompletionRule,
    Database,
    Instance,
    Series,
    SeriesAssociation,
    SeriesState,
    Study,
    count_by_state,
    utcnow,
)
from node.assemble.declared import DECLARING_MODALITIES, consistent_count
from node.assemble.evidence import Verdict, association_evidence, judge
from node.assemble.policy import CompletionPolicy
from node.jobs.headers import first_paths, read_header

log = logging.getLogger(__name__)

BATCH = 500
"""Series judged per tick at most (the longest waiting first)."""


@dataclass(frozen=True)
class Candidate:
    """A receiving series old enough for some rule to complete it."""

    series_uid: str
    study_uid: str
    modality: str | None
    calling_ae_title: str | None
    called_ae_title: str | None
    instance_count: int
    last_received_at: dt.datetime


@lru_cache(maxsize=256)
def _header(path: str) -> Dataset | None:
    """An instance's header (cached: a stored instance keeps its path while its series is receiving)."""
    header = read_header(path)
    if isinstance(header, str):
        log.warning("cannot judge the completion of the series of %s by its headers: %s", path, header)
        return None
    return header


def _first_header(database: Database, series_uid: str) -> Dataset | None:
    path = first_paths(database, [series_uid]).get(series_uid)
    return _header(path) if path else None


def _declared_count(database: Database, candidate: Candidate) -> int | None:
    """The instance count the series' first and latest instances both declare, for modalities that declare one."""
    if candidate.modality not in DECLARING_MODALITIES:
        return None
    with database.session() as session:
        latest = session.scalar(select(Instance.path).where(Instance.series_uid == candidate.series_uid)
                                .order_by(Instance.received_at.desc()).limit(1))
    return consistent_count(_first_header(database, candidate.series_uid), _header(latest) if latest else None)


def _candidates(session: Session, received_by: dt.datetime) -> list[Candidate]:
    rows = session.execute(
        select(Series.series_uid, Series.study_uid, Series.modality, Series.calling_ae_title, Series.called_ae_title,
               Series.instance_count, Series.last_received_at)
        .where(Series.state == SeriesState.receiving, Series.last_received_at <= received_by)
        .order_by(Series.last_received_at)
        .limit(BATCH)
    ).all()
    return [Candidate(*row) for row in rows]


def _verdicts(settings: Settings, database: Database, now: dt.datetime) -> list[tuple[Candidate, Verdict]]:
    """The series that are complete now, each with its verdict."""
    policy = CompletionPolicy(settings)
    with database.session() as session:
        candidates = _candidates(session, now - dt.timedelta(seconds=policy.shortest_wait()))
        evidence = association_evidence(session, [c.series_uid for c in candidates])
    found = []
    for candidate in candidates:
        rule = policy.for_series(candidate.calling_ae_title, candidate.called_ae_title,
                                 lambda c=candidate: _first_header(database, c.series_uid))
        verdict = judge(rule, candidate.last_received_at, candidate.instance_count, evidence.get(candidate.series_uid),
                        lambda c=candidate: _declared_count(database, c), now)
        if verdict is not None:
            found.append((candidate, verdict))
    return found


def _complete(session: Session, candidate: Candidate, verdict: Verdict, now: dt.datetime) -> bool:
    """Move one series to ``complete`` by compare-and-set; False when an instance (or, for the association
    rule, a new association) arrived meanwhile and the series stays receiving."""
    guard = [Series.series_uid == candidate.series_uid, Series.state == SeriesState.receiving,
             Series.last_received_at <= verdict.received_by]
    if verdict.rule == CompletionRule.association:
        guard.append(~exists().where(SeriesAssociation.series_uid == candidate.series_uid,
                                     SeriesAssociation.outcome.is_(None)))
    moved = session.execute(
        update(Series).where(*guard)
        .values(state=SeriesState.complete, completed_at=now, completed_by=verdict.rule, state_reason=verdict.reason)
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved:
        # The evidence of this completion is spent; associations still open keep their rows.
        session.execute(delete(SeriesAssociation).where(SeriesAssociation.series_uid == candidate.series_uid,
                                                        SeriesAssociation.outcome.is_not(None)))
        log.info("series %s %s (%d instances)", candidate.series_uid, verdict.reason, candidate.instance_count)
    return bool(moved)


def complete_studies(session: Session, study_uids: set[str], now: dt.datetime) -> int:
    """Mark complete the studies among ``study_uids`` none of whose series is still receiving; how many."""
    done = 0
    for study_uid in sorted(study_uids):
        receiving = exists().where(Series.study_uid == study_uid, Series.state == SeriesState.receiving)
        done += session.execute(
            update(Study).where(Study.study_uid == study_uid, Study.completed_at.is_(None), ~receiving)
            .values(completed_at=now).execution_options(synchronize_session=False)
        ).rowcount
    return done


def tick(settings: Settings, database: Database, now: dt.datetime | None = None) -> int:
    """Move the ``receiving`` series that are complete now to ``complete``; return how many moved."""
    now = now or utcnow()
    found = _verdicts(settings, database, now)
    if not found:
        return 0
    with database.session() as session:
        moved = [candidate for candidate, verdict in found if _complete(session, candidate, verdict, now)]
        complete_studies(session, {candidate.study_uid for candidate in moved}, now)
    return len(moved)


def resume(settings: Settings, database: Database) -> dict[str, int]:
    """At start: restart the quiet period of ``receiving`` series and set their association evidence aside
    (a restart may have cut their senders off); report what is pending.

    ``complete`` series are left as they are: the dispatcher picks them up on its own.
    """
    now = utcnow()
    with database.session() as session:
        restarted = session.execute(
            update(Series)
            .where(Series.state == SeriesState.receiving, Series.last_received_at < now)
            .values(last_received_at=now, state_reason="resumed after restart")
        ).rowcount
        session.execute(
            update(SeriesAssociation)
            .where(SeriesAssociation.outcome.is_distinct_from(AssociationOutcome.aborted))
            .values(outcome=AssociationOutcome.interrupted, ended_at=func.coalesce(SeriesAssociation.ended_at, now))
        )
        finished = select(Series.series_uid).where(Series.state != SeriesState.receiving)
        session.execute(delete(SeriesAssociation).where(SeriesAssociation.series_uid.in_(finished)))
        pending = count_by_state(session, Series.state, Series.state.in_([SeriesState.receiving, SeriesState.complete]))
    if restarted or pending:
        log.info(
            "resuming: %d series receiving (quiet period restarted), %d complete awaiting routing",
            pending.get("receiving", 0),
            pending.get("complete", 0),
        )
    return pending
