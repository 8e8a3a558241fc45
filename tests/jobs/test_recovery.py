"""The database is the source of truth: lost messages and re-completed series recover without duplicates."""

from __future__ import annotations

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
