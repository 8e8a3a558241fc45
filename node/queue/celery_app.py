"""The Celery application, built from the node's settings.

Broker: ``queue.broker_url`` (Redis in production) or, when empty, Celery's own filesystem transport in
``<storage_dir>/broker``: no service to install, the same Celery code path as production, and far faster
than a node needs (README, benchmarks). Inference tasks go to the ``gpu`` queue, delivery tasks to ``delivery``,
so a slow model never holds up sending. No result backend: the database holds every job's outcome.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

from celery import Celery
from kombu import Queue

from node.queue import fs_transport, redis_transport
from node.config import CONFIG_ENV, Settings, load_settings

RUN_JOB_TASK = "pacsnode.run_job"
DELIVER_TASK = "pacsnode.deliver"
GPU_QUEUE = "gpu"
DELIVERY_QUEUE = "delivery"
PROCESSES_ENV = "PACSNODE_WORKER_PROCESSES"  # how many pool processes the worker runs (set by run_worker)
EMBEDDED_POLL_SECONDS = 0.005  # how soon a worker sees a new message file; idle CPU stays negligible (measured)
TASK_MODULES = ("node.jobs.tasks", "node.deliver.tasks")

_LOCK = threading.Lock()
_CURRENT: tuple[Celery, Settings] | None = None
_PRODUCERS: dict[tuple[str, str], Celery] = {}


def broker_dir(settings: Settings) -> Path:
    """Folder of the embedded filesystem broker (``queue.broker_dir``, or under ``node.storage_dir``)."""
    return (settings.queue.broker_dir or settings.node.storage_dir / "broker").resolve()


def _broker(settings: Settings) -> tuple[str, dict]:
    if settings.queue.broker_url:
        options: dict = {"visibility_timeout": max(3600.0, 2 * settings.queue.job_timeout_seconds)}
        if settings.queue.key_prefix:
            options["global_keyprefix"] = settings.queue.key_prefix
        return redis_transport.transport_url(settings.queue.broker_url), options
    folder = broker_dir(settings)
    messages, control = folder / "messages", folder / "control"
    messages.mkdir(parents=True, exist_ok=True)
    control.mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(messages),
        "data_folder_out": str(messages),
        "control_folder": str(control),
        "polling_interval": EMBEDDED_POLL_SECONDS,
    }
    return f"{fs_transport.ALIAS}://", options


def make_celery(settings: Settings) -> Celery:
    """A new Celery app for ``settings``; workers and producers both use it."""
    url, options = _broker(settings)
    app = Celery("pacsnode", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # with late acks: a pool process holds only the message it runs, none waits behind it
        worker_lost_wait=2.0,  # a killed pool process: give its message back after 2 s, not 10
        task_queues=[Queue(GPU_QUEUE), Queue(DELIVERY_QUEUE)],
        task_default_queue=GPU_QUEUE,
        task_routes={RUN_JOB_TASK: {"queue": GPU_QUEUE}, DELIVER_TASK: {"queue": DELIVERY_QUEUE}},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # The filesystem transport has no pub/sub for remote control; Redis keeps `celery inspect` working.
        worker_enable_remote_control=bool(settings.queue.broker_url),
        # A stage whose tasks module is not installed simply has no worker tasks.
        include=[m for m in TASK_MODULES if importlib.util.find_spec(m) is not None],
    )
    return app


def init_app(settings: Settings) -> Celery:
    """Make the app for ``settings`` this process's app (a worker calls this once at start)."""
    global _CURRENT
    with _LOCK:
        if _CURRENT is None or _CURRENT[1] is not settings:
            _CURRENT = (make_celery(settings), settings)
        return _CURRENT[0]


def get_app() -> Celery:
    """This process's app; tasks register on it. Built from $PACSNODE_CONFIG if no worker set it up."""
    if _CURRENT is None:
        return init_app(load_settings(os.environ.get(CONFIG_ENV)))
    return _CURRENT[0]


def get_settings() -> Settings:
    """The settings this process's app was built from."""
    get_app()
    assert _CURRENT is not None
    return _CURRENT[1]


def producer_app(settings: Settings) -> Celery:
    """A cached app for sending tasks with ``settings``' broker (the node's dispatcher and reconciler)."""
    url, options = _broker(settings)
    key = (url, repr(sorted(options.items())))
    with _LOCK:
        if key not in _PRODUCERS:
            _PRODUCERS[key] = make_celery(settings)
        return _PRODUCERS[key]


def send(settings: Settings, task_name: str, *args: object) -> str:
    """Send ``task_name(*args)`` to its queue; returns the Celery task id."""
    return producer_app(settings).send_task(task_name, args=list(args)).id


def send_many(settings: Settings, task_name: str, argument_lists: list[tuple]) -> list[str]:
    """Send ``task_name`` once per argument tuple through one producer; the Celery task ids, in order.

    Transports that can batch get the messages at once (Redis: one pipelined round trip, kombu's
    ``Producer.batch``); others publish one by one. Raises if the broker fails: whether any of the messages
    arrived is then unknown, so callers treat none as sent (a duplicate message is harmless).
    """
    app = producer_app(settings)
    task_ids: list[str] = []
    with app.producer_or_acquire() as producer, producer.batch():
        for args in argument_lists:
            task_ids.append(app.send_task(task_name, args=list(args), producer=producer).id)
    return task_ids


def queue_depth(settings: Settings, queue: str) -> int:
    """Messages waiting in ``queue`` (not counting those a worker holds).

    A plain (not passive) declare: kombu's passive check ignores ``global_keyprefix`` on Redis, and declaring
    our own queue is harmless.
    """
    app = producer_app(settings)
    with app.connection_for_write() as connection:
        return int(connection.default_channel.queue_declare(queue=queue).message_count)
