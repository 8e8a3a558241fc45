"""What every pacsnode Celery task shares: task options, the worker process's database handle, and the set-up of
each pool process (its share of the CPU threads, numpy's huge page requests).
"""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from node.config import Settings
from node.db import Database, open_database, relax_commit_sync
from node.queue.celery_app import PROCESSES_ENV, get_settings
from node.queue.workers import mark_stopped, register
from pipelines.device import share_cpu_threads
from pipelines.upstream.numpy_hugepages import use_hugepages

log = logging.getLogger(__name__)

_DATABASE: tuple[int, Database] | None = None


def worker_database(settings: Settings) -> Database:
    """This worker process's database handle (a forked pool child opens its own connections); the first call in
    a process also records the process in ``workers`` and starts its beats (node.queue.workers).

    Job-state commits from workers do not wait for the disk: a power cut can lose the last few
    transitions, and the reconciler then runs those jobs again (results keep their UIDs and replace
    themselves), whereas waiting for two fsyncs per job would cap how many jobs a worker can finish. The node's
    own connections (received instances, routing) keep full durability.
    """
    global _DATABASE
    if _DATABASE is None or _DATABASE[0] != os.getpid():
        database = open_database(settings.node.resolved_database_url())
        relax_commit_sync(database)
        database.engine.dispose()  # connections opened before the listener go
        _DATABASE = (os.getpid(), database)
        register(settings, database)
    return _DATABASE[1]


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError, BrokerError, RedisConnectionError, RedisTimeoutError,
)
"""Errors that pass: the database or the broker briefly unreachable (kombu's OperationalError, redis-py's)."""


TASK_OPTIONS: dict = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT_ERRORS,  # the database or the broker is briefly unreachable: retry with backoff
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 8,
}
"""Options every pacsnode task shares: late acks, and retries while the database or the broker is unreachable."""


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
    worker_database(settings)  # registers the process in ``workers`` before its first task


@worker_process_shutdown.connect
@worker_shutdown.connect
def _record_stop(**_: object) -> None:
    """A pool process (or a solo worker) that ends in order is shown stopped, not dead."""
    mark_stopped()
