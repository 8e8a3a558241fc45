"""How series were declared complete and how often they reopened: for `pacsnode status`, the dashboard and
the metrics, so that an administrator sees a sender for which the fast completion rule is wrong."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.db import Series, count_by_state


def reopenings_by_sender(session: Session) -> list[dict[str, Any]]:
    """Per calling AE, the series that reopened because an instance came after they were declared complete: a
    sender for which the completion rule is wrong (give it ``completion: {mode: quiet}`` under ``senders``)."""
    rows = session.execute(
        select(Series.calling_ae_title, func.count(), func.sum(Series.reopen_count), func.max(Series.reopened_at))
        .where(Series.reopen_count > 0)
        .group_by(Series.calling_ae_title)
        .order_by(func.sum(Series.reopen_count).desc())
    ).all()
    return [{"calling_ae_title": ae or "", "series": int(series), "reopenings": int(total or 0), "last": last}
            for ae, series, total, last in rows]


def completion_summary(session: Session) -> dict[str, Any]:
    """How series were declared complete (by rule, for their latest completion) and how often they reopened."""
    by_rule = count_by_state(session, Series.completed_by, Series.completed_by.is_not(None))
    reopened = session.execute(select(func.count(), func.coalesce(func.sum(Series.reopen_count), 0))
                               .where(Series.reopen_count > 0)).one()
    return {"by_rule": by_rule, "reopened_series": int(reopened[0]), "reopenings": int(reopened[1])}
