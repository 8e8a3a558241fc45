"""Readiness checks: the index answers, storage takes writes, and the disk guard is not active."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from node.config import Settings
from node.db import Database
from node.receive.diskguard import disk_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database(database: Database) -> Check:
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"; the detail says which
        return Check("database", False, f"index not reachable: {type(exc).__name__}: {exc}")
    return Check("database", True, "index reachable")


def check_storage(settings: Settings) -> Check:
    storage = Path(settings.node.storage_dir)
    try:
        storage.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage, prefix=".readyz-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return Check("storage", False, f"{storage} not writable: {exc.strerror or exc}")
    return Check("storage", True, f"{storage} writable")


def check_disk(settings: Settings) -> Check:
    try:
        state = disk_state(settings)
    except OSError as exc:
        return Check("disk", False, f"cannot read free space: {exc.strerror or exc}")
    return Check("disk", not state.low, state.describe())


ReadinessCheck = Callable[[], Check]  # a check of something the serving process runs (its embedded workers)


def readiness(settings: Settings, database: Database, extra: Sequence[ReadinessCheck] = ()) -> list[Check]:
    """All readiness checks, ``extra`` last; the node is ready when every one is ok."""
    return [check_database(database), check_storage(settings), check_disk(settings), *(check() for check in extra)]


BROKER_TIMEOUT = 2.0  # a scrape or page must not wait on kombu's connection retries


def _read_queues(settings: Settings, answer: dict[str, object]) -> None:
    from node.queue.celery_app import DELIVERY_QUEUE, GPU_QUEUE, queue_depth  # Celery only when asked

    try:
        answer["queues"] = {queue: queue_depth(settings, queue) for queue in (GPU_QUEUE, DELIVERY_QUEUE)}
    except Exception as exc:  # any transport error: the broker is unreachable or misconfigured
        answer["problem"] = f"cannot read the broker's queues: {type(exc).__name__}: {exc}"


def broker_queues(settings: Settings) -> tuple[dict[str, int], str | None]:
    """Messages waiting per broker queue, or ({}, why not) when the broker cannot be read in time."""
    answer: dict[str, object] = {}
    reader = threading.Thread(target=_read_queues, args=(settings, answer), name="pacsnode-broker-probe", daemon=True)
    reader.start()
    reader.join(BROKER_TIMEOUT)
    if "queues" in answer:
        return answer["queues"], None  # type: ignore[return-value]
    return {}, str(answer.get("problem") or f"the broker did not answer within {BROKER_TIMEOUT:.0f} s")
