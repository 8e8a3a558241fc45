"""`pacsnode serve` with its embedded broker and workers: C-STORE in, routed by called AE, job run; the workers
restarted when they die, ended when serve dies, and never two sets on one storage folder."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pydicom
from sqlalchemy import select

from node.db import Job, JobState, Series
from node.operate.serve import run
from node.ports import free_port
from node.queue.celery_app import GPU_QUEUE
from node.waiting import wait_until
from tests.operate.webcheck import metric
from tests.support import dcmtk, procfs
from tests.support.node_harness import base_config
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess
from tests.support.pipelines import RUN_LOG_ENV, SLEEP_ENV

FINISHED = (JobState.succeeded, JobState.failed)


def storescu(port: int, files: list[Path], called: str) -> None:
    result = dcmtk.storescu(port, files, calling="CT_SCANNER", called=called)
    assert result.returncode == 0, result.stderr


def serve_extra(web_port: int) -> dict:
    """A node with the embedded job and delivery workers, routes by called AE title, its web server on ``web_port``."""
    config = base_config(Path("unused"))
    extra = {
        "queue": {**config["queue"], "embedded_worker": True},
        "pipelines": config["pipelines"],
        "routes": [
            {"name": "lung-ae", "called_ae_title": "AI_LUNG", "pipelines": ["sleep"]},
            {"name": "general", "match": {"Modality": "CT"}, "pipelines": ["noop"]},
        ],
        "web": {"enabled": True, "host": "127.0.0.1", "port": web_port},
    }
    return extra


def embedded_workers(serve_pid: int) -> dict[str, int]:
    """queues -> pid of each embedded worker's main process (a child of serve)."""
    found = {}
    for pid in procfs.children(serve_pid):
        arguments = procfs.command_line(pid)
        if "node.queue" in arguments and procfs.running(pid):
            found[arguments[arguments.index("--queues") + 1]] = pid
    return found


def worker_processes(serve_pid: int) -> list[int]:
    """The embedded workers' processes, their pool processes included."""
    return [pid for pid in procfs.descendants(serve_pid) if "node.queue" in procfs.command_line(pid)
            and procfs.running(pid)]


def readyz(url: str) -> tuple[int, dict]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json()


def jobs_of(node: NodeProcess, series_uid: str) -> list[Job]:
    with node.database.session() as session:
        return list(session.scalars(select(Job).where(Job.series_uid == series_uid)).all())


def test_serve_runs_the_called_ae_titles_pipeline_restarts_a_dead_worker_and_takes_its_workers_along(
        tmp_path: Path, caplog) -> None:
    web_port = free_port()
    url = f"http://127.0.0.1:{web_port}"
    run_log = tmp_path / "runs.log"
    files = write_series(tmp_path / "series", 4, rows=32, columns=32)
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    node = NodeProcess(tmp_path / "node", extra=serve_extra(web_port), env={RUN_LOG_ENV: str(run_log), SLEEP_ENV: "0.2"})
    expected = 2 + node.settings.queue.worker_concurrency + node.settings.delivery.worker_concurrency
    with node:
        node.wait_for(lambda: readyz(url)[0] == 200, timeout=60)
        job_worker = embedded_workers(node.process.pid)[GPU_QUEUE]
        os.killpg(job_worker, signal.SIGKILL)  # the worker and its pool processes
        killed = time.monotonic()

        # Not ready while it is down, with the reason; ready again once it is back.
        _, body = node.wait_for(lambda: (answer := readyz(url))[0] == 503 and answer, timeout=10)
        assert not body["ready"] and not body["checks"]["workers"]["ok"]
        assert "job worker down" in body["checks"]["workers"]["detail"]
        assert "SIGKILL" in body["checks"]["workers"]["detail"]
        node.wait_for(lambda: readyz(url)[0] == 200, timeout=60)
        restarted = time.monotonic() - killed
        assert embedded_workers(node.process.pid)[GPU_QUEUE] != job_worker
        assert node.log().count(f"embedded job worker (pid {job_worker}) was killed by signal SIGKILL; restarting") == 1
        assert metric(url, "pacsnode_embedded_worker_restarts_total", worker=GPU_QUEUE) == 1
        assert metric(url, "pacsnode_embedded_worker_up", worker=GPU_QUEUE) == 1

        # A series sent after the restart is routed by the AE title it called, and its job runs once.
        storescu(node.port, files, called="AI_LUNG")
        jobs = node.wait_for(lambda: (jobs := jobs_of(node, series_uid)) and all(j.state in FINISHED for j in jobs)
                             and jobs, timeout=60)
        assert [(j.pipeline, j.state, j.run_count) for j in jobs] == [("sleep", JobState.succeeded, 1)]
        with node.database.session() as session:
            series = session.get(Series, series_uid)
        assert series.called_ae_title == "AI_LUNG" and series.state_reason == "routes: lung-ae"
        assert len([line for line in run_log.read_text().splitlines() if line.startswith("done ")]) == 1

        # A second serve on the same storage folder refuses before it touches the folder or its index.
        already_stopped = threading.Event()
        already_stopped.set()
        assert run(node.settings, node.config_path, stop=already_stopped) == 1
        assert f"another pacsnode worker set (gpu worker pid {embedded_workers(node.process.pid)[GPU_QUEUE]}" in caplog.text

        # Killed outright, serve takes its receivers and workers (pool processes too) with it.
        tree = procfs.descendants(node.process.pid)
        assert len(worker_processes(node.process.pid)) == expected
        node.kill()
        killed = time.monotonic()
        wait_until(lambda: not [pid for pid in tree if procfs.running(pid)]
                   and not procfs.processes_mentioning(str(node.config_path)), 10, "serve's processes to end", 0.05)
        gone = time.monotonic() - killed

        node.start()  # the lock files the killed workers left do not block; one worker set again
        node.wait_for(lambda: readyz(url)[0] == 200, timeout=60)
        assert len(worker_processes(node.process.pid)) == expected
        assert len(procfs.processes_mentioning(str(node.config_path))) == expected + 1  # serve itself
    print(f"worker killed -> ready again: {restarted:.1f} s; serve killed -> none of its processes left: {gone:.2f} s")
