"""The Celery task of the inference queue: thin, named, idempotent, taking only a job ID.

The work and every state change live in ``node.jobs.runner``; a duplicate message finds the job taken or done
and returns without running it again. This task wires in what comes after a job: what its destinations want
written with it (fallback images, a key object selection), and the outbox rows recorded with its success and
enqueued once it is committed.
"""

from __future__ import annotations

from functools import partial

from node.deliver.outbox import add_deliveries, announce
from node.deliver.outputs import wanted_outputs
from node.jobs.runner import JobHooks, process_job
from node.queue.celery_app import RUN_JOB_TASK, get_app, get_settings
from node.queue.task_base import TASK_OPTIONS, worker_database


@get_app().task(name=RUN_JOB_TASK, **TASK_OPTIONS)
def run_job(job_id: int) -> str:
    """Run inference job ``job_id`` (see node.jobs.runner.process_job); returns its outcome."""
    settings = get_settings()
    database = worker_database(settings)
    hooks = JobHooks(
        wanted_outputs=partial(wanted_outputs, settings, database),
        on_success=partial(add_deliveries, settings),
        after_commit=partial(announce, settings, database),
    )
    return process_job(settings, database, int(job_id), hooks).value
