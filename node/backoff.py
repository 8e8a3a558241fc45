"""Exponential backoff, shared by job retries and delivery retries: the initial delay, doubled per attempt, capped."""

from __future__ import annotations

MAX_DOUBLINGS = 60  # beyond this the cap has long been reached; keeps 2**n small


def backoff_seconds(initial: float, cap: float, attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th failed attempt (1-based): ``initial * 2**(attempt - 1)``, at most
    ``cap``; never less than ``initial``, so a retry is never a tight loop."""
    doublings = min(max(0, attempt - 1), MAX_DOUBLINGS)
    return min(cap, initial * 2**doublings)
