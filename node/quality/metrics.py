"""Prometheus metrics of quality monitoring, read from the index at scrape time: rolling agreement with the
references of the last ``quality.metrics_window_days``, references by state, and the latest drift checks."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from node.config import Settings
from node.db import Database, QualityReference, utcnow
from node.quality import queries

log = logging.getLogger(__name__)

SCORE_LABELS = ["pipeline", "version", "segment"]


class QualityCollector(Collector):
    """Collects pacsnode_quality_* metrics."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings, self.database = settings, database

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception as exc:  # noqa: BLE001 - a scrape must still answer; pacsnode_index_up tells the index failed
            log.error("metrics: cannot read quality monitoring from the index: %s", exc)

    def _collect(self) -> Iterator[Metric]:
        since = utcnow() - dt.timedelta(days=self.settings.quality.metrics_window_days)
        with self.database.session() as session:
            summary = queries.summary(queries.scores(session, since=since, limit=100_000))
            states = dict(session.execute(select(QualityReference.state, func.count()).group_by(QualityReference.state)).all())
            checks = queries.drift(session)
        window = f" over the last {self.settings.quality.metrics_window_days:g} days"
        dice = GaugeMetricFamily("pacsnode_quality_dice_mean", "Mean Dice against references" + window, labels=SCORE_LABELS)
        hd95 = GaugeMetricFamily("pacsnode_quality_hd95_mm_median", "Median HD95 (mm) against references" + window, labels=SCORE_LABELS)
        count = GaugeMetricFamily("pacsnode_quality_scores", "Scores against references" + window, labels=SCORE_LABELS)
        agreement = GaugeMetricFamily(
            "pacsnode_quality_agreement", "Share of findings agreeing with references" + window, labels=["pipeline", "version", "finding"]
        )
        for item in summary:
            labels = [item["pipeline"], item["version"], item["name"]]
            if item["kind"] == "classification":
                agreement.add_metric(labels, item["agreement"])
                continue
            count.add_metric(labels, item["count"])
            if item["dice_mean"] is not None:
                dice.add_metric(labels, item["dice_mean"])
            if item["hd95_mm_median"] is not None:
                hd95.add_metric(labels, item["hd95_mm_median"])
        yield from (dice, hd95, count, agreement)
        references = GaugeMetricFamily("pacsnode_quality_references", "References received, by state.", labels=["state"])
        for state in ("pending", "scored", "unmatched", "failed"):
            references.add_metric([state], states.get(state, 0))
        yield references
        labels = ["pipeline", "version", "kind", "name"]
        flagged = GaugeMetricFamily("pacsnode_quality_drift", "1 where the latest drift check flags a shift.", labels=labels)
        statistic = GaugeMetricFamily(
            "pacsnode_quality_drift_statistic", "PSI (measurements, findings), share of new input values, refusal share rise.", labels=labels
        )
        for check in checks:
            values = [check["pipeline"], check["version"], check["kind"], check["name"]]
            flagged.add_metric(values, int(check["flagged"]))
            if check["statistic"] is not None:
                statistic.add_metric(values, check["statistic"])
        yield flagged
        yield statistic
