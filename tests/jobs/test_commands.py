"""The queue's commands and the reconciler's timeouts, on a real index (no worker needed)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy import update

from node.db import Job, JobState, utcnow
from node.jobs import reconcile
from node.jobs.dispatch import route_complete
from tests.support.node_harness import Node, base_config


def pacsnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from node.cli import app; app()", *args],
                          capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": "/usr/bin"})


def test_route_test_explains_a_stored_series_and_jobs_lists_its_job(make_node, tmp_path: Path) -> None:
    node: Node = make_node(base_config(tmp_path / "storage"))
    series_uid = node.add_series(called="AI_LUNG", calling="CT7")
    [job_id] = route_complete(node.settings, node.database, [series_uid])

    explained = pacsnode("route", "test", series_uid, "--config", str(node.config_path))
    assert explained.returncode == 0, explained.stderr
    assert f"stored series {series_uid} (3 instances, now routed)" in explained.stdout
    assert "called AE 'AI_LUNG', calling AE 'CT7'" in explained.stdout
    assert "MATCH all-ct: matched Modality='CT'" in explained.stdout

    listed = pacsnode("jobs", "--config", str(node.config_path), "--state", "queued")
    assert listed.returncode == 0, listed.stderr
    assert f"│ {job_id}" in listed.stdout and "noop" in listed.stdout and series_uid[:20] in listed.stdout

    unknown = pacsnode("route", "test", "1.2.3.999", "--config", str(node.config_path))
    assert unknown.returncode == 1 and "neither a path nor a stored series UID" in unknown.stdout


def test_a_silent_job_is_retried_then_failed_after_its_last_attempt(make_node, tmp_path: Path) -> None:
    node: Node = make_node(base_config(tmp_path / "storage", max_job_attempts=2))
    series_uid = node.add_series()
    [job_id] = route_complete(node.settings, node.database, [series_uid])
    silent_since = utcnow() - dt.timedelta(seconds=node.settings.queue.job_timeout_seconds + 1)

    def vanish(attempts: int) -> None:
        with node.database.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(
                state=JobState.running, attempts=attempts, worker="gpu-host-7:4242:abcd", heartbeat_at=silent_since))

    vanish(1)
    assert reconcile.time_out_silent_jobs(node.settings, node.database) == [job_id]
    job = node.jobs(series_uid)[0]
    assert job.state == JobState.retrying
    assert job.reason == "worker gpu-host-7:4242:abcd gave no heartbeat for 2.5 s"

    vanish(2)
    reconcile.time_out_silent_jobs(node.settings, node.database)
    job = node.jobs(series_uid)[0]
    assert job.state == JobState.failed
    assert job.reason == "timed out after 2 attempts: worker gpu-host-7:4242:abcd gave no heartbeat for 2.5 s"


def test_serve_refuses_to_start_with_a_bad_route_naming_it(tmp_path: Path) -> None:
    config = base_config(tmp_path / "storage")
    config["routes"] = [{"name": "lungs", "match": {"SeriesDescription": "~[unclosed"}, "pipelines": ["ct-lung"]}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))

    result = pacsnode("serve", "--config", str(tmp_path / "bad.yaml"))

    assert result.returncode == 2
    assert "routes[lungs]: unknown pipeline 'ct-lung'" in result.stderr
    assert "routes[lungs]: match.SeriesDescription: bad regular expression '[unclosed'" in result.stderr
