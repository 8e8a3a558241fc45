"""The data of the dashboard's Quality page: rolling scores, their summary and plots, drift, references."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from node.config import Settings
from node.db import Database, utcnow
from node.quality import charts, queries


def format_number(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; a dash for none."""
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def quality_page(settings: Settings, database: Database) -> dict[str, Any]:
    window = settings.quality.metrics_window_days
    with database.session() as session:
        rows = queries.scores(session, since=utcnow() - dt.timedelta(days=window))
        data = {"references": queries.references(session), "drift": queries.drift(session)}
    plots = [charts.dice_over_time(rows), charts.agreement_over_time(rows)]
    return {
        **data,
        "scores": rows[:200],
        "summary": queries.summary(rows),
        "charts": [plot for plot in plots if plot],
        "window_days": f"{window:g}",
    }
