"""What every pacsnode Celery task shares: task options, the worker process's database handle, and the set-up of
each pool process (its share of the CPU threads, numpy's huge page requests).
"""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from node.config import Settings
from node.db import Database, open_database, relax_commit_sync
from node.queue.celery_app import PROCESSES_ENV, get_settings
from pipelines.device import share_cpu_threads
from pipelines.upstream.numpy_hugepages import use_hugepages

log = logging.getLogger(__name__)

_DATABASE: tuple[int, Database] | None = None


def worker_database(settings: Settings) -> Database:
    """This worker process's database handle (a forked pool child opens its own connections).

    Its commits do not wait for the index's disk sync (``relax_commit_sync``): waiting for two syncs per job
    would cap how many jobs a worker finishes. A crash of the database server (or a power cut) may then lose
    the last commits of the final fraction of a second, never a part of one, and never a commit that a
    synchronous commit has seen (the log is flushed in order). What each lost commit leaves, and what restores it:

    * a job's claim or heartbeat: the job is still queued, or running with a stale heartbeat; the reconciler
      runs it again;
    * a job's success (results, outcome, its delivery rows): the job is running with a stale heartbeat and is
      run again; its result objects keep their UIDs and replace themselves; the delivery messages already sent
      name rows that are gone and are dropped, and the re-run adds the rows again;
    * a delivery's claim or outcome: the row is pending or sending; the outbox sends it again (destinations
      replace an instance sent twice) and a refusal is recorded again;
    * the received instances, routing and jobs made from them are the node's own commits, fully durable.

    The one record that doing the work again would not restore is the audit of objects already sent to a
    destination, so a delivery attempt's outcome and audit commit with full durability (``keep_commit_sync``).
    """
    global _DATABASE
    if _DATABASE is None or _DATABASE[0] != os.getpid():
        database = open_database(settings.node.resolved_database_url())
        relax_commit_sync(database)
        database.engine.dispose()  # connections opened before the listener go
        _DATABASE = (os.getpid(), database)
    return _DATABASE[1]


TASK_OPTIONS: dict = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError,),  # the database is briefly unreachable: retry with backoff
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 8,
}
"""Options every pacsnode task shares: late acks, and retries while the database is unreachable."""


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    global _DATABASE
    if _DATABASE is not None:
        _DATABASE[1].engine.dispose(close=False)
        _DATABASE = None


@worker_process_init.connect
def _prepare_pool_process(**_: object) -> None:
    """Each pool process: its share of the CPU threads, and numpy's huge page requests as configured."""
    settings = get_settings()
    threads = share_cpu_threads(int(os.environ.get(PROCESSES_ENV, "1")), settings.queue.cpu_threads_per_process)
    use_hugepages(settings.queue.numpy_hugepages)
    log.debug("worker process %d: %d CPU thread(s) for models", os.getpid(), threads)
