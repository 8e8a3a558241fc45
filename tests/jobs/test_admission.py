"""Resource admission: a job starts only when its pipeline's memory fits; otherwise its reason says why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from node.db import JobState
from node.jobs.admission import Ledger, Need, NeverFits, ResourcesBusy, host_budget_mb
from node.jobs.dispatch import route_complete
from node.jobs.runner import Outcome, process_job
from tests.support.node_harness import base_config


def noop_node(make_node, tmp_path, memory_mb: int, job_memory_mb: int = 0):
    config = base_config(tmp_path / "storage", job_memory_mb=job_memory_mb)
    for entry in config["pipelines"]:
        if entry["name"] == "noop":
            entry["memory_mb"] = memory_mb
    return make_node(config)


def test_reservations_add_up_per_host_and_go_with_their_job(make_node, tmp_path):
    node = noop_node(make_node, tmp_path, 100)
    ledger = Ledger(node.settings)
    with ledger.reserve(1, Need(600), budget_mb=1000, available_mb=5000):
        with pytest.raises(ResourcesBusy, match=r"needs 500 MB; running jobs 1 hold 600 of the 1000 MB"):
            with ledger.reserve(2, Need(500), budget_mb=1000, available_mb=5000):
                pass
        with ledger.reserve(3, Need(400), budget_mb=1000, available_mb=5000):
            pass
    with ledger.reserve(2, Need(500), budget_mb=1000, available_mb=5000):  # job 1 is done: it fits now
        pass
    with pytest.raises(ResourcesBusy, match="the host has 300 MB available now"):
        with ledger.reserve(4, Need(500), budget_mb=1000, available_mb=300):
            pass
    with pytest.raises(NeverFits, match=r"needs 2000 MB .* may use 1000 MB \(queue.job_memory_mb\)"):
        with ledger.reserve(5, Need(2000), budget_mb=1000, available_mb=5000):
            pass
    assert host_budget_mb(node.settings) > 0


def test_a_dead_workers_reservation_is_dropped(make_node, tmp_path):
    node = noop_node(make_node, tmp_path, 100)
    script = ("import sys, os; from node.config import Settings; from node.jobs.admission import Ledger, Need; "
              "import yaml; settings = Settings(**yaml.safe_load(open(sys.argv[1]))); "
              "Ledger(settings).reserve(7, Need(900), 1000, 5000).__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", script, str(node.config_path)], check=True, timeout=60)
    with Ledger(node.settings).reserve(8, Need(900), budget_mb=1000, available_mb=5000):  # the holder died
        pass


def test_a_job_that_could_never_fit_fails_with_the_reason(make_node, tmp_path):
    node = noop_node(make_node, tmp_path, memory_mb=64_000, job_memory_mb=8_000)
    series_uid = node.add_series()
    [job_id] = route_complete(node.settings, node.database, [series_uid])
    assert process_job(node.settings, node.database, job_id) == Outcome.failed
    [job] = node.jobs()
    assert job.state == JobState.failed
    assert job.reason.startswith("needs 64000 MB of memory (its pipeline's memory_mb); jobs on this worker host may use 8000 MB")


def test_a_job_that_does_not_fit_now_waits_without_using_an_attempt(make_node, tmp_path):
    node = noop_node(make_node, tmp_path, memory_mb=600, job_memory_mb=1000)
    series_uid = node.add_series()
    [job_id] = route_complete(node.settings, node.database, [series_uid])
    with Ledger(node.settings).reserve(99, Need(700), budget_mb=1000, available_mb=10**6):  # a running job
        assert process_job(node.settings, node.database, job_id) == Outcome.retrying
    [job] = node.jobs()
    assert job.state == JobState.retrying and job.attempts == 0
    assert job.reason == "waiting for memory: needs 600 MB; running jobs 99 hold 700 of the 1000 MB jobs may use on this host"
    assert process_job(node.settings, node.database, job_id) == Outcome.succeeded  # the other job is done
    assert os.path.exists(Ledger(node.settings).path) and "99" not in Ledger(node.settings).path.read_text()


def test_jobs_share_a_gpu_while_their_gpu_memory_fits(make_node, tmp_path):
    """The device's (free, total) MB come from the driver on a GPU host; here they are given."""
    node = noop_node(make_node, tmp_path, 100)
    ledger = Ledger(node.settings)
    first, second = Need(100, 6000, "cuda:0"), Need(100, 6000, "cuda:0")
    with ledger.reserve(1, first, budget_mb=10_000, available_mb=10_000, gpu=(16_000, 16_000)):
        with ledger.reserve(2, second, budget_mb=10_000, available_mb=10_000, gpu=(10_000, 16_000)):
            with pytest.raises(ResourcesBusy, match=r"waiting for GPU memory: needs 6000 MB on cuda:0; 4000 MB free, "
                                                    r"12000 MB held by running jobs"):
                with ledger.reserve(3, Need(100, 6000, "cuda:0"), 10_000, 10_000, gpu=(4_000, 16_000)):
                    pass
            with ledger.reserve(4, Need(100, 6000, "cuda:1"), 10_000, 10_000, gpu=(16_000, 16_000)):
                pass  # another device
    with pytest.raises(NeverFits, match="needs 20000 MB of GPU memory"):
        with ledger.reserve(5, Need(100, 20_000, "cuda:0"), 10_000, 10_000, gpu=(16_000, 16_000)):
            pass
