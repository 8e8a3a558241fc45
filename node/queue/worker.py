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

from celery.signals import worker_ready

from node.config import Settings
from node.queue.celery_app import CONFIG_ENV, DELIVERY_QUEUE, GPU_QUEUE, init_app

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
) -> None:
    """Run a worker in this process until it is stopped (SIGTERM finishes the task in hand first)."""
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())  # forked pool children read the same file
    app = init_app(settings)
    log.info(
        "worker for queues %s, concurrency %d, pool %s, broker %s",
        queues,
        concurrency,
        pool,
        "embedded (filesystem)" if settings.embedded_broker else settings.queue.broker_url.split("@")[-1],
    )
    app.worker_main(argv=worker_argv(queues, concurrency, pool, name, settings.logging.level))


def start_embedded_worker(
    settings: Settings, config_path: Path, queues: str = ALL_QUEUES, log_file: Path | None = None
) -> subprocess.Popen:
    """Start a worker subprocess (used by `pacsnode serve` with the embedded broker); stop it with terminate()."""
    command = [
        sys.executable,
        "-m",
        "node.queue",
        "--config",
        str(Path(config_path).resolve()),
        "--queues",
        queues,
        "--concurrency",
        str(settings.queue.worker_concurrency),
    ]
    output = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT if output else None)
    log.info("embedded worker started (pid %d) for queues %s", process.pid, queues)
    return process
