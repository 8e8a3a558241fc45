"""Polling with a deadline, for tests that wait on other processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.waiting import wait_until


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test naming ``what`` after ``timeout`` s."""
    return wait_until(predicate, timeout, what, every, error=AssertionError)
