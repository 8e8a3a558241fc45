"""The evidence that a series is complete, and the judgement of one series against its completion rule.

Evidence comes from the index (several receiving processes share the port, so process memory knows only a
part): the associations that carried the series and how they ended, and the instance count its data
declares. A series is complete, in this order of preference, when

1. (mode ``association``) every association that carried it was released, none is still open, they were
   sending at the same time (a sender that opens one association per instance, or sends a series over
   several associations one after the other, gives no evidence), and ``settle_seconds`` passed since the last
   release and the last instance;
2. (mode ``association``) it holds as many instances as its first and latest instances declare, and
   ``settle_seconds`` passed since the last instance;
3. nothing arrived for ``quiet_seconds``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from node.config import CompletionConfig
from node.db import AssociationOutcome, CompletionRule, SeriesAssociation


@dataclass(frozen=True)
class AssociationEvidence:
    """What the index says of the associations that carried one series."""

    carried: int  # associations that carried instances of the series
    still_open: int
    not_released: int  # aborted, or cut off by a restart of the node
    latest_start: dt.datetime  # the latest first instance of the series on one of them
    earliest_end: dt.datetime | None
    latest_end: dt.datetime | None

    def released_together(self) -> bool:
        """Every association was released, and all were sending the series at one time."""
        if self.still_open or self.not_released or self.earliest_end is None:
            return False
        return self.carried == 1 or self.latest_start <= self.earliest_end


def association_evidence(session: Session, series_uids: list[str]) -> dict[str, AssociationEvidence]:
    """The association evidence of each of ``series_uids`` that has any."""
    if not series_uids:
        return {}
    open_rows = func.sum(case((SeriesAssociation.outcome.is_(None), 1), else_=0))
    not_released = func.sum(case((SeriesAssociation.outcome.in_(
        [AssociationOutcome.aborted, AssociationOutcome.interrupted]), 1), else_=0))
    rows = session.execute(
        select(SeriesAssociation.series_uid, func.count(), open_rows, not_released, func.max(SeriesAssociation.first_at),
               func.min(SeriesAssociation.ended_at), func.max(SeriesAssociation.ended_at))
        .where(SeriesAssociation.series_uid.in_(series_uids))
        .group_by(SeriesAssociation.series_uid)
    ).all()
    return {
        uid: AssociationEvidence(int(carried), int(still_open or 0), int(aborted or 0), started, first_end, last_end)
        for uid, carried, still_open, aborted, started, first_end, last_end in rows
    }


@dataclass(frozen=True)
class Verdict:
    """A series is complete: by which rule, why (in words), and the latest last instance that rule allows."""

    rule: CompletionRule
    reason: str
    received_by: dt.datetime  # completing is guarded on the series' last instance being no later than this


def judge(rule: CompletionConfig, last_received_at: dt.datetime, instance_count: int,
          evidence: AssociationEvidence | None, declared: Callable[[], int | None], now: dt.datetime) -> Verdict | None:
    """The verdict on one ``receiving`` series, or None while it must wait; ``declared`` reads the count its
    data declares (only asked when the association evidence is not enough)."""
    settled = now - dt.timedelta(seconds=rule.settle_seconds)
    if rule.mode == "association" and last_received_at <= settled:
        if evidence is not None and evidence.released_together() and evidence.latest_end <= settled:
            count = "its association was" if evidence.carried == 1 else f"its {evidence.carried} associations were"
            return Verdict(CompletionRule.association,
                           f"complete: {count} released, then {rule.settle_seconds:g} s without an instance", settled)
        expected = declared()
        if expected is not None and expected == instance_count:
            return Verdict(CompletionRule.declared, f"complete: {instance_count} instances, as many as its headers "
                           f"declare, then {rule.settle_seconds:g} s without an instance", settled)
    quiet = now - dt.timedelta(seconds=rule.quiet_seconds)
    if last_received_at <= quiet:
        return Verdict(CompletionRule.quiet, f"complete: no instance for {rule.quiet_seconds:g} s", quiet)
    return None
