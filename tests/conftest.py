"""Shared pytest fixtures (tests/support/fixtures.py); each stage keeps its own in tests/<stage>/conftest.py."""

from __future__ import annotations

import os

import pytest

from node.ports import PORT_RANGE_ENV

pytest_plugins = ["tests.support.fixtures"]


def _worker_port_range() -> None:
    """Each parallel test worker (and the processes it starts) draws loopback ports from its own range."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and count and PORT_RANGE_ENV not in os.environ:
        size = (32000 - 20000) // int(count)
        low = 20000 + int(worker.removeprefix("gw")) * size
        os.environ[PORT_RANGE_ENV] = f"{low}-{low + size - 1}"


_worker_port_range()

LONGEST_FIRST = [
    "tests/viewer/test_ohif_seg.py",
    "tests/jobs/test_jobs.py",
    "tests/jobs/test_worker_death.py",
    "tests/e2e/test_orthanc.py",
    "tests/jobs/test_serve.py",
    "tests/receive/test_durability.py",
    "tests/operate/test_full_disk.py",
    "tests/receive/test_resend_policy.py",
    "tests/viewer/",
    "tests/e2e/",
]
"""Modules (or folders) that take longest, started first: with tests run in parallel a module per worker,
the workers then end at about the same time instead of one finishing a long module alone."""


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    for rank, prefix in enumerate(LONGEST_FIRST):
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: the rest keep their order
