"""Jobs through real Celery workers, with the embedded broker and with Redis: once, never lost, never twice."""

from __future__ import annotations

import os
import signal
import time


import pytest

from node.db import JobState, SeriesState
from node.jobs.dispatch import enqueue_many, route_complete
from node.operate.supervisor import WorkerSupervisor
from tests.support.node_harness import REDIS_URL, Node, base_config
from tests.support.waiting import wait_for
from tests.support.pipelines import RUN_LOG_ENV


def test_routed_series_runs_its_pipeline_once(broker_node) -> None:
    node: Node = broker_node()
    node.start_worker()
    node.start_loops()
    series_uid = node.add_series()

    job = node.wait_job(series_uid, {"succeeded"})
    time.sleep(1.0)  # a duplicate run would show up here

    assert len(node.runs()) == 1
    assert node.series(series_uid).state == SeriesState.routed
    assert node.series(series_uid).state_reason == "routes: all-ct"
    assert (job.pipeline, job.routes, job.attempts, job.run_count) == ("noop", ["all-ct"], 1, 1)
    assert job.queued_at <= job.started_at <= job.finished_at
    assert {"load", "infer", "total", "queue_wait"} <= set(job.timings)


def test_permanent_error_fails_at_once_with_its_reason(broker_node) -> None:
    node: Node = broker_node(routes=[
        {"name": "reject", "match": {"Modality": "CT"}, "pipelines": ["rejecting"]},
        {"name": "unsupported", "match": {"Modality": "CT"}, "pipelines": ["unsupported"]},
    ])
    node.start_worker()
    node.start_loops()
    series_uid = node.add_series()

    def both_failed() -> list | None:
        jobs = node.jobs(series_uid)
        return jobs if len(jobs) == 2 and all(j.state == JobState.failed for j in jobs) else None

    rejected, unsupported = wait_for(both_failed, 30, "both jobs failed")
    assert rejected.attempts == unsupported.attempts == 1
    assert rejected.reason == "pipeline rejecting does not accept this series: modality CT is not MR"
    assert unsupported.reason == "needs at least 100 slices, got 3"
    assert len(node.runs("start")) == 1  # the rejecting pipeline never ran


def test_transient_error_is_retried_with_backoff_then_succeeds(broker_node) -> None:
    node: Node = broker_node(routes=[{"name": "flaky", "match": {}, "pipelines": ["flaky"]}])
    node.start_worker()
    node.start_loops()
    series_uid = node.add_series()

    job = node.wait_job(series_uid, {"succeeded", "failed"}, timeout=30)
    assert job.state == JobState.succeeded, job.reason
    assert job.attempts == 3
    assert len(node.runs("start")) == 3 and len(node.runs()) == 1


def test_worker_killed_mid_job_gives_exactly_one_success(broker_node) -> None:
    node: Node = broker_node(routes=[{"name": "slow", "match": {}, "pipelines": ["sleep"]}])
    first = node.start_worker(sleep=2.0)
    node.start_loops()
    series_uid = node.add_series()

    wait_for(lambda: node.runs("start"), 20, "the job to start")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool child, mid-job
    first.wait()
    assert node.runs() == []
    node.start_worker(sleep=2.0)

    job = node.wait_job(series_uid, {"succeeded", "failed"}, timeout=40)
    time.sleep(1.0)
    assert job.state == JobState.succeeded, job.reason
    assert job.attempts == 2 and job.run_count == 1
    assert len(node.runs()) == 1


def test_pool_process_killed_mid_job_is_redelivered_and_taken_over(broker_node) -> None:
    node: Node = broker_node(routes=[{"name": "slow", "match": {}, "pipelines": ["sleep"]}],
                             queue={"job_timeout_seconds": 60})
    node.start_worker(sleep=1.0)
    node.start_loops()
    series_uid = node.add_series()

    [started] = wait_for(lambda: node.runs("start"), 20, "the job to start")
    os.kill(int(started.split()[2]), signal.SIGKILL)  # the pool process running the job; its parent lives on

    # The parent rejects the message back to the queue and a new pool process takes over the dead
    # holder's lease at once, long before the 60 s heartbeat timeout.
    job = node.wait_job(series_uid, {"succeeded", "failed"}, timeout=30)
    assert job.state == JobState.succeeded, job.reason
    assert job.attempts == 2 and job.run_count == 1
    assert len(node.runs()) == 1


def test_worker_processes_share_the_cores_between_them(broker_node) -> None:
    """Each of N pool processes gives its models cores / N threads, so concurrent jobs do not oversubscribe."""
    node: Node = broker_node()
    node.start_worker(concurrency=2)
    node.start_loops()
    series_uid = node.add_series()

    node.wait_job(series_uid, {"succeeded"})

    (run,) = node.runs()
    assert int(run.split()[4]) == max(1, (os.cpu_count() or 1) // 2)


def test_two_workers_share_a_queue(broker_node) -> None:
    node: Node = broker_node(routes=[{"name": "slow", "match": {}, "pipelines": ["sleep"]}])
    node.start_worker(sleep=0.5)
    node.start_worker(sleep=0.5)
    node.start_loops()
    series = [node.add_series(slices=2) for _ in range(6)]

    for series_uid in series:
        assert node.wait_job(series_uid, {"succeeded"}, timeout=30).run_count == 1
    runs = node.runs()
    assert len(runs) == 6
    assert len({line.split()[2] for line in runs}) == 2, "both workers took jobs"


def test_the_embedded_workers_that_serve_starts_run_jobs(make_node, tmp_path, monkeypatch) -> None:
    node: Node = make_node(base_config(tmp_path / "storage"))
    monkeypatch.setenv(RUN_LOG_ENV, str(node.run_log))
    workers = WorkerSupervisor(node.settings, node.config_path, log_file=node.root / "embedded.log")
    workers.start()
    try:
        assert workers.wait_ready(30), workers.check().detail
        node.start_loops()
        series_uid = node.add_series()
        assert node.wait_job(series_uid, {"succeeded", "failed"}).state == JobState.succeeded
    finally:
        workers.stop()
    assert [line.split()[2] for line in node.runs()] != [str(os.getpid())]
    assert len(node.runs()) == 1
    log = (node.root / "embedded.log").read_text()
    assert log.count("pacsnode worker ") == 2, "the job and the delivery worker were ready"
    assert "worker for queues gpu," in log and "worker for queues delivery," in log  # sending never waits for a model


@pytest.mark.redis
@pytest.mark.postgres
def test_duplicate_messages_never_run_a_job_twice(make_node, redis_prefix, postgres_url, tmp_path) -> None:
    config = base_config(tmp_path / "storage", REDIS_URL, redis_prefix)
    config["node"]["database_url"] = postgres_url
    config["routes"] = [{"name": "quick", "match": {}, "pipelines": ["sleep"]}]
    node: Node = make_node(config)
    node.start_worker(sleep=0.2)
    node.start_worker(sleep=0.2)
    series = [node.add_series(slices=1, complete=False) for _ in range(8)]
    node.complete(*series)
    job_ids = route_complete(node.settings, node.database, series)
    for _ in range(3):  # every job's message three times, raced by two workers
        enqueue_many(node.settings, node.database, job_ids)

    for series_uid in series:
        job = node.wait_job(series_uid, {"succeeded", "failed"})
        assert (job.state, job.attempts, job.run_count) == (JobState.succeeded, 1, 1)
    time.sleep(1.0)
    assert sorted(line.split()[1] for line in node.runs("start")) == sorted(series)
