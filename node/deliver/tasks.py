"""Celery task of the ``delivery`` queue: thin and idempotent, it takes a delivery ID and nothing else.

The claim, the sending and the bookkeeping live in ``node.deliver.attempt``; a duplicate message finds the
row no longer pending and does nothing.
"""

from __future__ import annotations

from node.deliver.attempt import deliver
from node.queue.celery_app import DELIVER_TASK, get_app, get_settings
from node.queue.task_base import TASK_OPTIONS, worker_database


@get_app().task(name=DELIVER_TASK, **TASK_OPTIONS)
def deliver_task(delivery_id: int) -> dict[str, int]:
    """Attempt delivery ``delivery_id`` (see node.deliver.attempt.deliver)."""
    settings = get_settings()
    return deliver(settings, worker_database(settings), int(delivery_id))
