"""Fixtures of the queue tests: nodes (make_node: tests/support/fixtures.py) on the embedded broker and on Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.node_harness import REDIS_URL, Node, base_config, delete_prefixed
from tests.support.postgres import throwaway_database


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test only; every key under it is deleted afterwards."""
    prefix = f"pacsnode-test-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield prefix
    delete_prefixed(prefix)


@pytest.fixture(params=["embedded", "redis"])
def broker_node(request: pytest.FixtureRequest, make_node: Callable[..., Node], tmp_path: Path) -> Callable[..., Node]:
    """A node factory for each broker: the embedded default and Redis; ``queue=`` entries override queue keys."""

    def make(queue: dict[str, Any] | None = None, **overrides: Any) -> Node:
        if request.param == "redis":
            prefix = request.getfixturevalue("redis_prefix")
            config = base_config(tmp_path / "storage", REDIS_URL, prefix)
        else:
            config = base_config(tmp_path / "storage")
        config.update(overrides)
        config["queue"].update(queue or {})
        return make_node(config)

    return make


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL server."""
    with throwaway_database("pacsnode_queue") as url:
        yield url
