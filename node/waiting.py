"""Polling with a deadline, for code that waits on other processes (the demo, local peers, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1,
               error: type[Exception] = TimeoutError) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; raise ``error`` naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise error(f"timed out after {timeout:.0f} s waiting for {what}")
