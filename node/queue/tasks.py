"""Celery tasks of the inference queue: thin, named, idempotent, taking only IDs.

The work and every state change live in ``node.processing``; a duplicate message finds the job taken or done
and returns without running it again.
"""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from node.config import Settings
from node.db import Database, open_database
from node.processing import process_job
from node.queue.celery_app import RUN_JOB_TASK, get_app, get_settings

log = logging.getLogger(__name__)

_DATABASE: tuple[int, Database] | None = None


def worker_database(settings: Settings) -> Database:
    """This worker process's database handle (a forked pool child opens its own connections)."""
    global _DATABASE
    if _DATABASE is None or _DATABASE[0] != os.getpid():
        _DATABASE = (os.getpid(), open_database(settings.node.resolved_database_url()))
    return _DATABASE[1]


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    global _DATABASE
    if _DATABASE is not None:
        _DATABASE[1].engine.dispose(close=False)
        _DATABASE = None


@get_app().task(
    name=RUN_JOB_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),  # the database is briefly unreachable: retry with backoff
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def run_job(job_id: int) -> str:
    """Run inference job ``job_id`` (see node.processing.process_job); returns its outcome."""
    settings = get_settings()
    return process_job(settings, worker_database(settings), int(job_id)).value
