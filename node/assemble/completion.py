"""Series assembly: a series is complete once no instance has arrived for ``series_quiet_seconds``.

``tick`` runs periodically inside `pacsnode serve`; ``resume`` runs once at start so series a crash
left half-received get a fresh quiet period (their senders may still be re-sending).
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update

from node.config import Settings
from node.db import Database, Series, SeriesState, count_by_state, utcnow

log = logging.getLogger(__name__)


def tick(settings: Settings, database: Database) -> int:
    """Move quiet ``receiving`` series to ``complete``; return how many moved."""
    now = utcnow()
    cutoff = now - dt.timedelta(seconds=settings.node.series_quiet_seconds)
    with database.session() as session:
        quiet = session.execute(
            select(Series.series_uid, Series.instance_count).where(
                Series.state == SeriesState.receiving, Series.last_received_at <= cutoff
            )
        ).all()
        moved = 0
        for series_uid, count in quiet:
            # Guarded on state and time, so an instance arriving meanwhile keeps the series receiving.
            result = session.execute(
                update(Series)
                .where(
                    Series.series_uid == series_uid,
                    Series.state == SeriesState.receiving,
                    Series.last_received_at <= cutoff,
                )
                .values(state=SeriesState.complete, completed_at=now, state_reason=None)
            )
            if result.rowcount:
                moved += 1
                log.info("series %s complete: %d instances", series_uid, count)
    return moved


def resume(settings: Settings, database: Database) -> dict[str, int]:
    """At start: restart the quiet period of ``receiving`` series; report what is pending.

    ``complete`` series are left as they are: the dispatcher picks them up on its own.
    """
    now = utcnow()
    with database.session() as session:
        restarted = session.execute(
            update(Series)
            .where(Series.state == SeriesState.receiving, Series.last_received_at < now)
            .values(last_received_at=now, state_reason="resumed after restart")
        ).rowcount
        pending = count_by_state(session, Series.state, Series.state.in_([SeriesState.receiving, SeriesState.complete]))
    if restarted or pending:
        log.info(
            "resuming: %d series receiving (quiet period restarted), %d complete awaiting routing",
            pending.get("receiving", 0),
            pending.get("complete", 0),
        )
    return pending
