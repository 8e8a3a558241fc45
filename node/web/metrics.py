"""Prometheus metrics gathered from the index and storage at scrape time.

Receivers, workers and the outbox run in separate processes; reading the shared index when scraped gives
one consistent picture without a push gateway or multiprocess files. Counters come from rows that are
never deleted (audit events, series, jobs), so they only go up.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from node.assemble.summary import completion_summary, reopenings_by_sender
from node.operate import audit
from node.operate.background import failure_counts
from node.config import Settings
from node.db import (AuditEvent, CompletionRule, Database, Delivery, DeliveryState, Instance, Job, JobState, Series,
                     SeriesState, count_by_state)
from node.quality.metrics import QualityCollector
from node.receive.diskguard import disk_state
from node.web.health import broker_queues
from node.web.queries import job_stage_timings

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
FINISHED = (JobState.succeeded, JobState.failed)


def _histogram(values: list[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets and the sum for ``values``."""
    values = sorted(values)
    buckets = [(repr(bound), float(bisect_right(values, bound))) for bound in DURATION_BUCKETS]
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


def loop_failures() -> Metric:
    """Failed ticks of each background loop of this process (a dependency down shows here, logged only once)."""
    failures = CounterMetricFamily(
        "pacsnode_background_loop_failures", "Failed ticks of each background loop of this process.", labels=["loop"]
    )
    for name, count in sorted(failure_counts().items()):
        failures.add_metric([name], count)
    return failures


class IndexCollector(Collector):
    """Collects pacsnode_* metrics from the index and the storage file system."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._from_index()
        except Exception as exc:  # a scrape must still answer; the gauge below says the index failed
            log.error("metrics: cannot read the index: %s", exc)
            yield GaugeMetricFamily("pacsnode_index_up", "1 when the index could be read.", value=0)
        else:
            yield GaugeMetricFamily("pacsnode_index_up", "1 when the index could be read.", value=1)
        yield from self._broker()
        yield from self._disk()
        yield loop_failures()

    def _broker(self) -> Iterator[Metric]:
        queues, problem = broker_queues(self.settings)
        yield GaugeMetricFamily("pacsnode_broker_up", "1 when the broker's queues could be read.", value=int(not problem))
        if problem:
            log.error("metrics: %s", problem)
            return
        messages = GaugeMetricFamily(
            "pacsnode_broker_queue_messages", "Task messages waiting in the broker, per queue.", labels=["queue"]
        )
        for queue, count in queues.items():
            messages.add_metric([queue], count)
        yield messages

    def _from_index(self) -> Iterator[Metric]:
        with self.database.session() as session:
            yield from self._traffic(session)
            yield from self._states(session)
            yield from self._completion(session)
            yield self._durations(session)

    @staticmethod
    def _traffic(session: Session) -> Iterator[Metric]:
        """Associations, instances received and stored, delivery attempts (from the audit trail and the index)."""
        received = session.execute(
            select(
                func.count(func.distinct(AuditEvent.association_id)),
                func.coalesce(func.sum(AuditEvent.instance_count), 0),
                func.coalesce(func.sum(AuditEvent.size_bytes), 0),
            ).where(AuditEvent.event == audit.INSTANCES_RECEIVED)
        ).one()
        rejected = session.scalar(select(func.count()).where(AuditEvent.event == audit.ASSOCIATION_REJECTED))
        delivered = dict(session.execute(
            select(AuditEvent.outcome, func.count()).where(AuditEvent.event == audit.RESULTS_DELIVERED)
            .group_by(AuditEvent.outcome)
        ).all())
        stored = session.execute(select(func.count(), func.coalesce(func.sum(Instance.size_bytes), 0))).one()
        associations = CounterMetricFamily(
            "pacsnode_associations", "Associations that stored instances, and associations refused.", labels=["outcome"]
        )
        associations.add_metric(["accepted"], received[0])
        associations.add_metric(["rejected"], rejected or 0)
        yield associations
        yield CounterMetricFamily("pacsnode_instances_received", "Instances received.", value=received[1])
        yield CounterMetricFamily("pacsnode_received_bytes", "Bytes of instances received.", value=received[2])
        yield GaugeMetricFamily("pacsnode_instances_stored", "Instances currently in storage.", value=stored[0])
        yield GaugeMetricFamily("pacsnode_stored_bytes", "Bytes of instances currently in storage.", value=stored[1])
        outcomes = CounterMetricFamily(
            "pacsnode_delivery_attempts", "Delivery attempts by outcome (from the audit trail).", labels=["outcome"]
        )
        outcomes.add_metric(["success"], delivered.get(int(audit.Outcome.success), 0))
        outcomes.add_metric(["failure"], sum(n for code, n in delivered.items() if code != int(audit.Outcome.success)))
        yield outcomes

    @staticmethod
    def _states(session: Session) -> Iterator[Metric]:
        """Series, jobs and deliveries by state, and the queue depth."""
        completed = session.scalar(select(func.count()).where(Series.completed_at.is_not(None)))
        yield CounterMetricFamily("pacsnode_series_completed", "Series assembled as complete.", value=completed or 0)
        for name, title, column, states in (("pacsnode_series", "Series", Series.state, SeriesState),
                                            ("pacsnode_jobs", "Jobs", Job.state, JobState),
                                            ("pacsnode_deliveries", "Deliveries", Delivery.state, DeliveryState)):
            counts = count_by_state(session, column)
            family = GaugeMetricFamily(name, f"{title} by state.", labels=["state"])
            for state in states:
                family.add_metric([state.value], counts.get(state.value, 0))
            yield family
            if column is Job.state:
                depth = counts.get(JobState.queued.value, 0) + counts.get(JobState.retrying.value, 0)
                yield GaugeMetricFamily("pacsnode_queue_depth", "Jobs waiting for a worker (queued or retrying).",
                                        value=depth)

    @staticmethod
    def _durations(session: Session) -> Metric:
        """Finished jobs' durations per pipeline and stage."""
        durations: dict[tuple[str, str], list[float]] = {}
        for job in session.scalars(select(Job).where(Job.state.in_(FINISHED))).all():
            for stage, seconds in job_stage_timings(job).items():
                durations.setdefault((job.pipeline, stage), []).append(seconds)
        histogram = HistogramMetricFamily(
            "pacsnode_job_duration_seconds", "Finished jobs' durations per pipeline and stage.", labels=["pipeline", "stage"]
        )
        for (pipeline, stage), values in sorted(durations.items()):
            buckets, total = _histogram(values)
            histogram.add_metric([pipeline, stage], buckets, total)
        return histogram

    @staticmethod
    def _completion(session: Session) -> Iterator[Metric]:
        """How series were declared complete, and the reopenings per sender (a sender the fast rule misjudges)."""
        completion = completion_summary(session)
        reopenings = reopenings_by_sender(session)
        rules = GaugeMetricFamily("pacsnode_series_completed_by", "Series by the rule that last declared them "
                                  "complete (association, declared, quiet).", labels=["rule"])
        for rule in CompletionRule:
            rules.add_metric([rule.value], completion["by_rule"].get(rule.value, 0))
        yield rules
        reopened = CounterMetricFamily("pacsnode_series_reopened", "Series reopened by an instance that came after "
                                       "they were declared complete, per calling AE.", labels=["calling_ae_title"])
        for row in reopenings:
            reopened.add_metric([row["calling_ae_title"]], row["reopenings"])
        yield reopened

    def _disk(self) -> Iterator[Metric]:
        try:
            state = disk_state(self.settings)
        except OSError as exc:
            log.error("metrics: cannot read free space of %s: %s", self.settings.node.storage_dir, exc)
            return
        yield GaugeMetricFamily("pacsnode_disk_free_bytes", "Free bytes in the storage file system.", value=state.free_bytes)
        yield GaugeMetricFamily("pacsnode_disk_total_bytes", "Size of the storage file system.", value=state.total_bytes)
        yield GaugeMetricFamily(
            "pacsnode_disk_guard_threshold_bytes", "Free space below which associations are refused.", value=state.threshold_bytes
        )
        yield GaugeMetricFamily(
            "pacsnode_disk_guard_active", "1 while new associations are refused for lack of space.", value=int(state.low)
        )


def make_registry(settings: Settings, database: Database, extra: Sequence[Collector] = ()) -> CollectorRegistry:
    """A registry of its own (not the process-global one), so several apps can live in one process; ``extra``
    collectors report what the serving process runs (its embedded workers)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(settings, database))
    registry.register(QualityCollector(settings, database))
    for collector in extra:
        registry.register(collector)
    return registry
