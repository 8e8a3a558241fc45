"""Recovery in seconds, with the default settings: a dead worker (on this host or another) loses nothing and
duplicates nothing, and a broker that dies at the end of a job delays its results by seconds only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from typer.testing import CliRunner

from node.cli import app
from node.config import DeliveryConfig, QueueConfig
from node.db import Job, JobState, ResultObject, Series, SeriesState, WorkerProcess, WorkerState, utcnow
from node.ports import free_port
from node.web import queries
from node.web.metrics import IndexCollector
from tests.support.node_harness import Node, base_config
from tests.support.orthanc import Orthanc
from tests.support.pipelines import GATE_ENV
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.orthanc, pytest.mark.timeout(180)]

DEFAULT_TIMINGS = {name: QueueConfig.model_fields[name].default for name in (
    "reconcile_seconds", "heartbeat_seconds", "job_timeout_seconds", "requeue_after_seconds", "retry_initial_seconds",
    "retry_max_seconds", "worker_beat_seconds", "worker_dead_after_seconds")}
"""The queue's default timings: recovery is measured as it happens out of the box."""

OTHER_HOST = "gpu-host-7:4242:0badc0de"


def _routed_to(orthanc: Orthanc) -> dict:
    return {
        "routes": [{"name": "seg", "match": {"Modality": "CT"}, "pipelines": ["slowthreshold"],
                    "destinations": ["pacs"]}],
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port}],
    }


def _results(node: Node) -> dict[str, set[str]]:
    """SOP instance UIDs of every result object, by source series."""
    with node.database.session() as session:
        rows = session.execute(select(Job.series_uid, ResultObject.sop_instance_uid)
                               .join(ResultObject, ResultObject.job_id == Job.id)).all()
    results: dict[str, set[str]] = {}
    for series_uid, sop_uid in rows:
        results.setdefault(series_uid, set()).add(sop_uid)
    return results


def _in_orthanc(orthanc: Orthanc) -> list[str]:
    """SOP instance UIDs of every instance Orthanc holds (one per stored copy)."""
    return [orthanc.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] for i in orthanc.instances()]


def _workers(node: Node) -> dict[str, WorkerState]:
    with node.database.session() as session:
        return {row.id: row.state for row in session.scalars(select(WorkerProcess))}


def _held_on_another_host(node: Node, series_uid: str) -> None:
    """A job running on a worker of another host, which beat a moment ago and then went silent (its host lost)."""
    now = utcnow()
    with node.database.session() as session:
        session.add(WorkerProcess(id=OTHER_HOST, host="gpu-host-7", pid=4242, queues="gpu", started_at=now,
                                  seen_at=now))
        session.add(Job(series_uid=series_uid, pipeline="slowthreshold", routes=["seg"], destinations=["pacs"],
                        state=JobState.running, attempts=1, worker=f"{OTHER_HOST}:1f2e3d4c", queued_at=now,
                        started_at=now, heartbeat_at=now))
        session.get(Series, series_uid).state = SeriesState.routed


def test_a_killed_worker_and_a_lost_host_cost_seconds_and_results_arrive_once(broker_node, orthanc: Orthanc) -> None:
    node: Node = broker_node(queue=DEFAULT_TIMINGS, delivery={}, **_routed_to(orthanc))
    first = node.start_worker(queues="gpu,delivery", sleep=3.0)
    node.start_loops("dispatcher", "reconciler", "outbox")
    killed_mid_run = node.add_series()
    lost_with_its_host = node.add_series(complete=False)
    _held_on_another_host(node, lost_with_its_host)

    wait_for(lambda: node.runs("start"), 30, "the job to start")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool process, mid-run
    first.wait()
    killed_at = time.monotonic()
    second = node.start_worker(queues="gpu,delivery", sleep=3.0)

    expected = 4  # a SEG and an SR for each series
    wait_for(lambda: len(orthanc.instances()) >= expected, 60, "both series' results in Orthanc")
    elapsed = time.monotonic() - killed_at
    print(f"\nkill to results in Orthanc: {elapsed:.1f} s")
    assert elapsed < 60
    time.sleep(2.0)  # nothing more arrives: no duplicate, no late zombie write
    results = _results(node)
    assert sorted(_in_orthanc(orthanc)) == sorted(results[killed_mid_run] | results[lost_with_its_host])
    for series_uid in (killed_mid_run, lost_with_its_host):
        [job] = node.jobs(series_uid)
        assert job.state == JobState.succeeded and job.run_count == 1 and job.attempts == 2, job.reason
    states = _workers(node)
    assert states[OTHER_HOST] == WorkerState.dead
    assert sorted(states.values()) == sorted([WorkerState.alive, WorkerState.dead, WorkerState.dead])
    assert len([line for line in node.runs() if line.split()[1] == killed_mid_run]) == 1

    os.killpg(second.pid, signal.SIGTERM)  # a stop in order: shown stopped, not dead
    wait_for(lambda: WorkerState.stopped in _workers(node).values(), 20, "the stopped worker shown stopped")
    assert WorkerState.alive not in _workers(node).values()
    _shown_everywhere(node)


def _shown_everywhere(node: Node) -> None:
    """`pacsnode status`, the dashboard (and /api/status) and the metrics show two dead workers and one stopped."""
    status = CliRunner().invoke(app, ["status", "--config", str(node.config_path)], env={"COLUMNS": "250"})
    assert status.exit_code == 0, status.output
    workers = status.output[status.output.index("Workers"):]
    assert OTHER_HOST in workers and "dead" in workers and "stopped" in workers
    with node.database.session() as session:
        shown = {w["name"]: w["state"] for w in queries.workers(session)}
    assert shown[OTHER_HOST] == "dead" and sorted(shown.values()) == ["dead", "dead", "stopped"]
    [family] = [m for m in IndexCollector(node.settings, node.database).collect() if m.name == "pacsnode_workers"]
    assert {sample.labels["state"]: sample.value for sample in family.samples} == {"alive": 0, "dead": 2, "stopped": 1}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator["RedisServer"]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


class RedisServer:
    """A redis-server of the test's own, on a free port, without persistence: killing it loses every message."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder, self.process = port, folder, None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._pong(), 10, f"redis-server on port {self.port}", every=0.05)

    def _pong(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.mark.redis
def test_redis_killed_between_results_and_deliveries_delays_them_only(make_node, own_redis: RedisServer,
                                                                      orthanc: Orthanc, tmp_path: Path) -> None:
    config = base_config(tmp_path / "storage", own_redis.url, "pacsnode-test:", **DEFAULT_TIMINGS)
    node: Node = make_node({**config, **_routed_to(orthanc)})
    gate = tmp_path / "gate"
    node.start_worker(queues="gpu,delivery", sleep=0.0, env={GATE_ENV: str(gate)})
    node.start_loops("dispatcher", "reconciler", "outbox")
    series_uid = node.add_series()

    wait_for(lambda: node.runs("done"), 30, "the pipeline to finish its run")
    own_redis.kill()  # the job records its results and deliveries, then cannot announce them
    gate.touch()
    wait_for(lambda: node.jobs(series_uid)[0].state == JobState.succeeded, 30, "the job's end, broker down")
    time.sleep(1.0)
    own_redis.start()  # empty: every message it held is gone
    restarted_at = time.monotonic()

    wait_for(lambda: len(orthanc.instances()) >= 2, 60, "the results in Orthanc")
    print(f"\nbroker back to results in Orthanc: {time.monotonic() - restarted_at:.1f} s")
    # Rows due at once, not a requeue period (30 s) later.
    assert time.monotonic() - restarted_at < DeliveryConfig.model_fields["requeue_after_seconds"].default / 3
    time.sleep(2.0)
    [job] = node.jobs(series_uid)
    assert job.run_count == 1 and job.attempts == 1 and len(node.runs()) == 1
    assert sorted(_in_orthanc(orthanc)) == sorted(_results(node)[series_uid])
