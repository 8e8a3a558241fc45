"""Run a Celery worker for the node's queues, on this host or on a GPU host sharing ``storage_dir``.

Workers read series files from ``node.storage_dir`` and write results there, so in a multi-host deployment
that folder is a shared filesystem (NFS, CephFS) mounted at the same path on the node and every worker, and
``node.database_url`` points at a database they all reach (PostgreSQL).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NoReturn

from celery.signals import worker_ready, worker_shutting_down

from node.config import CONFIG_ENV, Settings
from node.queue.celery_app import DELIVERY_QUEUE, GPU_QUEUE, PROCESSES_ENV, init_app
from node.queue.embedded import attach

log = logging.getLogger(__name__)

ALL_QUEUES = f"{GPU_QUEUE},{DELIVERY_QUEUE}"


@worker_ready.connect
def _announce(sender: object = None, **_: object) -> None:
    log.info("pacsnode worker %s ready", getattr(sender, "hostname", "?"))


def worker_argv(queues: str, concurrency: int, pool: str, name: str | None, loglevel: str) -> list[str]:
    """Celery's worker arguments for our queues; mingle and gossip are off (jobs need no peer state)."""
    nodename = name or f"pacsnode-{uuid.uuid4().hex[:6]}@%h"
    return [
        "worker",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--hostname={nodename}",
        f"--loglevel={loglevel}",
        "--without-mingle",
        "--without-gossip",
    ]


def run_worker(
    settings: Settings,
    queues: str = ALL_QUEUES,
    concurrency: int = 1,
    pool: str = "prefork",
    name: str | None = None,
    config_path: Path | None = None,
    delivery_worker: bool = False,
) -> NoReturn:
    """Run a worker in this process until it is stopped (SIGTERM finishes the task in hand first), then end
    the process with the worker's exit status (see ``_exit_without_teardown``); it does not return.

    ``delivery_worker`` also runs a worker for the delivery queue in a child process, so that sending
    never waits behind a running model. A worker that `pacsnode serve` started ties itself to serve first
    (``node.queue.embedded``): it ends with serve, and refuses to start beside another worker set.
    """
    attach(settings.node.storage_dir, queues)
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())  # forked pool children read the same file
    os.environ[PROCESSES_ENV] = str(concurrency)  # pool children size their CPU threads by it
    app = init_app(settings)
    log.info(
        "worker for queues %s, concurrency %d, pool %s, broker %s",
        queues,
        concurrency,
        pool,
        "embedded (filesystem)" if settings.embedded_broker else settings.queue.broker_url.split("@")[-1],
    )
    child = _start_delivery_worker(config_path, settings.delivery.worker_concurrency) if delivery_worker else None
    if child is not None:
        # Both workers finish their tasks in hand at the same time rather than one after the other.
        worker_shutting_down.connect(lambda **_: child.poll() is None and child.terminate(), weak=False)
    exit_code = 0
    try:
        app.worker_main(argv=worker_argv(queues, concurrency, pool, name, settings.logging.level))
    except SystemExit as exc:  # Celery's way of returning the worker's exit status
        exit_code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        if child is not None:
            stop_process(child, "delivery worker")
    _exit_without_teardown(exit_code)


def _exit_without_teardown(code: int) -> NoReturn:
    """Leave once Celery has stopped: its tasks in hand are finished and acknowledged, and the database
    commits are durable. Tearing down the interpreter (torch, MONAI, thousands of modules) only adds seconds
    to every stop of the node."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def worker_command(config_path: Path, queues: str, concurrency: int) -> list[str]:
    """The command line of a worker process for ``queues`` (``python -m node.queue``, as `pacsnode worker`)."""
    return [sys.executable, "-m", "node.queue", "--config", str(Path(config_path).resolve()), "--queues", queues,
            "--concurrency", str(concurrency)]


def _start_delivery_worker(config_path: Path | None, concurrency: int) -> subprocess.Popen:
    if config_path is None:
        raise ValueError("a separate delivery worker needs the configuration file's path")
    process = subprocess.Popen(worker_command(config_path, DELIVERY_QUEUE, concurrency))
    log.info("delivery worker started (pid %d)", process.pid)
    return process


def stop_process(process: subprocess.Popen | None, what: str, timeout: float = 30.0) -> None:
    """SIGTERM a worker process and wait; kill it if it has not stopped within ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s (pid %d) did not stop in %.0f s; killing it", what, process.pid, timeout)
        process.kill()
        process.wait()
