"""The database is the source of truth: lost messages and re-completed series recover without duplicates."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import pydicom
from sqlalchemy import select

from node.db import JobState, ResultObject, SeriesState
from node.queue.celery_app import GPU_QUEUE, broker_dir, queue_depth
from node.jobs.dispatch import rerun
from tests.support.node_harness import Node, base_config, delete_prefixed
from tests.support.waiting import wait_for


def flush_broker(node: Node) -> None:
    """Drop every message the broker holds, as a Redis flush or a wiped broker folder would."""
    if node.settings.queue.broker_url:
        assert delete_prefixed(node.settings.queue.key_prefix) > 0, "the broker held no keys to flush"
    else:
        messages = broker_dir(node.settings) / "messages"
        assert any(messages.iterdir()), "the broker folder held no messages"
        shutil.rmtree(messages)
        messages.mkdir()


def test_flushed_broker_mid_run_is_recovered_by_the_reconciler(broker_node) -> None:
    node: Node = broker_node(routes=[{"name": "slow", "match": {}, "pipelines": ["sleep"]}])
    node.start_worker(sleep=1.5)
    node.start_loops()
    series = [node.add_series(slices=2) for _ in range(3)]
    wait_for(lambda: node.runs("start"), 20, "the first job to start")

    sent = {job.id: job.celery_task_id for job in node.jobs()}
    flush_broker(node)  # the two jobs still waiting lose their messages

    for series_uid in series:
        job = node.wait_job(series_uid, {"succeeded", "failed"}, timeout=40)
        assert job.state == JobState.succeeded, job.reason
    resent = [job.id for job in node.jobs() if job.celery_task_id != sent[job.id]]
    assert len(resent) == 2, "the reconciler re-enqueued the two jobs whose messages were flushed"
    time.sleep(1.0)
    assert sorted(line.split()[1] for line in node.runs()) == sorted(series)


def test_unrouted_series_is_recorded_with_the_reason(broker_node) -> None:
    node: Node = broker_node()
    node.start_loops()
    series_uid = node.add_series(modality="MR")

    wait_for(lambda: node.series(series_uid).state == SeriesState.unrouted, 10, "the series to be unrouted")
    assert node.series(series_uid).state_reason == "no route matched: all-ct: Modality='MR' is not 'CT'"
    assert node.jobs(series_uid) == []


def test_series_completed_again_reruns_its_job_without_a_new_row(broker_node) -> None:
    node: Node = broker_node()
    node.start_worker()
    node.start_loops()
    series_uid = node.add_series()
    first = node.wait_job(series_uid, {"succeeded"})

    node.complete(series_uid)  # more instances arrived; the assembler completes the series again

    def rerun() -> object:
        jobs = node.jobs(series_uid)
        return jobs if jobs[0].state == JobState.succeeded and jobs[0].finished_at > first.finished_at else None

    jobs = wait_for(rerun, 20, "the job to run again")
    assert [job.id for job in jobs] == [first.id]
    assert jobs[0].run_count == 2 and len(node.runs()) == 2



def test_rerun_replaces_its_results_instead_of_duplicating_them(make_node, tmp_path: Path) -> None:
    config = base_config(tmp_path / "storage")
    config["routes"] = [{"name": "seg", "match": {"Modality": "CT"}, "pipelines": ["threshold"]}]
    node: Node = make_node(config)
    node.start_worker()
    node.start_loops()
    series_uid = node.add_series()
    job = node.wait_job(series_uid, {"succeeded", "failed"})
    assert job.state == JobState.succeeded, job.reason
    first = results_of(node, job.id)
    assert sorted(r.kind for r in first if not r.kind.startswith("fallback")) == ["seg", "sr"] and all(Path(r.path).is_file() for r in first)

    assert rerun(node.settings, node.database, job.id)
    wait_for(lambda: node.jobs(series_uid)[0].run_count == 2, 20, "the re-run to succeed")

    again = results_of(node, job.id)
    assert [(r.id, r.kind, r.sop_instance_uid) for r in again] == [(r.id, r.kind, r.sop_instance_uid) for r in first]
    assert again[0].created_at > first[0].created_at
    assert pydicom.dcmread(again[0].path).SOPInstanceUID == first[0].sop_instance_uid


def results_of(node: Node, job_id: int) -> list[ResultObject]:
    with node.database.session() as session:
        query = select(ResultObject).where(ResultObject.job_id == job_id).order_by(ResultObject.kind)
        return list(session.scalars(query).all())


def test_waiting_messages_are_not_duplicated_by_the_reconciler(broker_node) -> None:
    node: Node = broker_node()
    node.start_loops()  # no worker: the messages wait in the broker
    series = [node.add_series(slices=1) for _ in range(3)]
    wait_for(lambda: len(node.jobs()) == 3 and all(j.celery_task_id for j in node.jobs()), 10, "three jobs enqueued")
    sent = {job.id: job.celery_task_id for job in node.jobs()}

    time.sleep(node.settings.queue.requeue_after_seconds + 3 * node.settings.queue.reconcile_seconds)

    assert {job.id: job.celery_task_id for job in node.jobs()} == sent
    assert queue_depth(node.settings, GPU_QUEUE) == len(series)


def test_a_worker_judged_dead_cannot_record_the_job_it_carries_on_with(make_node, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """A stalled worker (judged dead, still running) is fenced: the job is retried, its own run records nothing."""
    import threading

    from node.db import Job, WorkerProcess, utcnow
    from node.jobs.reconcile import take_back_from_dead_workers
    from node.jobs.runner import Outcome, process_job
    from node.queue.workers import process_identity
    from tests.support.pipelines import SLEEP_ENV

    monkeypatch.setenv(SLEEP_ENV, "1.5")
    node: Node = make_node(base_config(tmp_path / "storage"))
    series_uid = node.add_series(complete=False)
    long_ago = utcnow() - dt.timedelta(minutes=5)
    with node.database.session() as session:  # this process as a worker whose beats stopped 5 minutes ago
        session.add(WorkerProcess(id=process_identity(), host="here", pid=1, queues="gpu", started_at=long_ago,
                                  seen_at=long_ago))
        job = Job(series_uid=series_uid, pipeline="slowthreshold", state=JobState.queued, queued_at=utcnow())
        session.add(job)
    outcome: list[Outcome] = []
    run = threading.Thread(target=lambda: outcome.append(process_job(node.settings, node.database, job.id)))
    run.start()
    wait_for(lambda: node.jobs(series_uid)[0].state == JobState.running, 10, "the job to start")

    assert take_back_from_dead_workers(node.settings, node.database) == [job.id]
    run.join(30)
    assert outcome == [Outcome.lost]
    [after] = node.jobs(series_uid)
    assert after.state == JobState.retrying and after.run_count == 0 and "died" in after.reason
    assert results_of(node, job.id) == []


def test_a_job_this_process_holds_but_no_longer_runs_is_taken_again(make_node, tmp_path: Path) -> None:
    """The task of a job whose end failed (the database or broker briefly gone) is retried in the same process:
    that process takes its own orphaned job at once, while a live holder elsewhere keeps its own."""
    from sqlalchemy import update

    from node.db import Job, utcnow
    from node.jobs.lease import claim
    from node.queue.workers import process_identity

    node: Node = make_node(base_config(tmp_path / "storage", job_timeout_seconds=3600))
    series_uid = node.add_series(complete=False)
    with node.database.session() as session:
        job = Job(series_uid=series_uid, pipeline="noop", state=JobState.running, attempts=1, queued_at=utcnow(),
                  worker="gpu-host-8:4242:600dc0de:12345678", heartbeat_at=utcnow())
        session.add(job)
    assert claim(node.settings, node.database, job.id) is None  # held by a live worker of another host

    with node.database.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(worker=f"{process_identity()}:12345678"))
    lease = claim(node.settings, node.database, job.id)
    assert lease is not None and lease.attempt == 2 and lease.worker.startswith(process_identity() + ":")
