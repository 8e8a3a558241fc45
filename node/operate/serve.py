"""`pacsnode serve`: the node's process tree and its orderly shutdown.

Opens the index (creating it, or upgrading it when ``node.upgrade_database`` says so), resumes interrupted series, starts the receiving processes, the background loops
(assembly, dispatch, reconciliation, outbox) and, with the embedded broker, the job and delivery workers, which
it restarts when they die (``node.operate.supervisor``). SIGTERM or SIGINT stops them in reverse order, letting
associations in progress finish; however serve ends, its receivers and workers end with it.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from node.assemble.completion import resume
from node.operate.background import start_background
from node.config import Settings
from node.db import open_database
from node.operate.supervisor import WorkerSupervisor
from node.receive.processes import ReceiverPool
from node.receive.reindex import reindex
from node.receive.storage import remove_partials
from node.web.server import WebServer, start_web

log = logging.getLogger(__name__)

WATCH_SECONDS = 1.0


def _supervisor(settings: Settings, config_path: Path | None) -> WorkerSupervisor | None:
    if not (settings.embedded_broker and settings.queue.embedded_worker):
        return None
    if config_path is None:
        log.warning("no configuration file given: not starting the embedded worker")
        return None
    return WorkerSupervisor(settings, config_path)


def run(settings: Settings, config_path: Path | None = None, stop: threading.Event | None = None) -> int:
    """Run the node until SIGTERM/SIGINT (or ``stop`` is set); return the exit code."""
    stop = stop or threading.Event()
    storage_dir = Path(settings.node.storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    workers = _supervisor(settings, config_path)
    in_use = workers.storage_in_use() if workers is not None else None
    if in_use:  # before anything touches the folder or its index
        log.error("not starting: %s", in_use)
        return 1
    removed = remove_partials(storage_dir)
    if removed:
        log.info("removed %d partial file(s) left by an interrupted write", removed)
    database = open_database(settings.node.resolved_database_url(), upgrade=settings.node.upgrade_database)
    reindex(storage_dir, database)
    resume(settings, database)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda number, _frame: (log.info("signal %d: stopping", number), stop.set()))

    pool = ReceiverPool(settings)
    background_stop = threading.Event()
    web: WebServer | None = None
    try:
        pool.start()
        start_background(settings, database, background_stop)
        if settings.web.enabled:
            supervised = [workers] if workers is not None else []
            web = start_web(settings, database, [w.check for w in supervised], supervised)
        if workers is not None:
            workers.start()  # from this thread, which lives as long as serve: see SupervisedWorker.start
        log.info("storage %s, index %s", storage_dir, database.engine.url.render_as_string())
        # A readiness line on stdout whatever the log level, for supervisors and tests.
        print(f"pacsnode serving on {settings.node.host}:{pool.port}", flush=True)
        while not stop.wait(WATCH_SECONDS):
            pool.restart_dead()
            if workers is not None:
                workers.watch()
    finally:
        # Background loops first, so no series completes while its sender is cut off; `resume` picks it up.
        log.info("stopping: background loops, receivers (finishing their associations), then the worker")
        background_stop.set()
        pool.stop(timeout=settings.node.network_timeout)
        if web is not None:
            web.stop()
        if workers is not None:
            workers.stop()
        database.dispose()
        log.info("pacsnode stopped")
    return 0
