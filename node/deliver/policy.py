"""What a store outcome means for a delivery: delivered, failed for good, or retry later (and when).

Permanent refusals fail at once so that nobody waits hours for a PACS that will never take the object;
everything that may change (network, timeouts, busy peers) is retried with exponential backoff up to the
configured cap, until the give-up horizon. Never a tight loop: the shortest delay is the initial one.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from node.backoff import backoff_seconds
from node.config import DeliveryConfig
from node.dicom.scu import Failure, StoreOutcome
from node.dicom.status import is_permanent_failure, is_success

_PERMANENT_FAILURES = frozenset({Failure.rejected_permanent, Failure.not_accepted, Failure.invalid})


class Verdict(str, enum.Enum):
    delivered = "delivered"
    failed = "failed"
    retry = "retry"
    replaced = "replaced"  # refused SOP class; the destination's fallback is sent instead


@dataclass(frozen=True)
class Decision:
    """The verdict for one attempt, with what to record on the delivery row."""

    verdict: Verdict
    last_status: str
    error: str
    next_attempt_at: dt.datetime | None = None


def status_text(outcome: StoreOutcome) -> str:
    """Short form for the `last_status` column: '0xA900' or the failure kind."""
    if outcome.status is not None:
        return f"0x{outcome.status:04X}"
    return outcome.failure.value if outcome.failure else "unknown"


def is_permanent(outcome: StoreOutcome) -> bool:
    """True when sending the same object to the same peer again cannot succeed."""
    if outcome.status is not None:
        code = outcome.status
        return is_permanent_failure(code)
    return outcome.failure in _PERMANENT_FAILURES


def retry_delay(config: DeliveryConfig, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: initial * 2^(n-1), capped."""
    return backoff_seconds(config.retry_initial_seconds, config.retry_max_seconds, attempts)


def decide(
    outcome: StoreOutcome, config: DeliveryConfig, attempts: int, first_created_at: dt.datetime, now: dt.datetime
) -> Decision:
    """Judge one attempt (``attempts`` counts it) of a delivery created at ``first_created_at``."""
    status = status_text(outcome)
    if is_success(outcome.status):
        return Decision(Verdict.delivered, status, outcome.error if outcome.status else "")
    error = outcome.describe()
    if is_permanent(outcome):
        return Decision(Verdict.failed, status, f"refused for good: {error}")
    next_at = now + dt.timedelta(seconds=retry_delay(config, attempts))
    if (next_at - first_created_at).total_seconds() > config.give_up_after_seconds:
        return Decision(
            Verdict.failed, status,
            f"gave up after {attempts} attempts over {config.give_up_after_seconds:g} s: {error}; "
            "fix the destination, then `pacsnode retry`",
        )
    return Decision(Verdict.retry, status, error, next_at)
