"""The delivery policy: which statuses deliver, which fail at once, and how retries are spaced."""

from __future__ import annotations

import datetime as dt

import pytest

from node.config import DeliveryConfig
from node.deliver.policy import Verdict, decide, retry_delay
from node.dicom.scu import Failure, StoreOutcome

CONFIG = DeliveryConfig(retry_initial_seconds=5, retry_max_seconds=60, give_up_after_seconds=300)
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _status(code: int) -> StoreOutcome:
    return StoreOutcome("f.dcm", "1.2", "1.2.3", status=code)


def _failure(kind: Failure) -> StoreOutcome:
    return StoreOutcome("f.dcm", "1.2", "1.2.3", failure=kind, error="x")


@pytest.mark.parametrize("code", [0x0000, 0xB000, 0xB006, 0xB007])
def test_success_and_warnings_are_delivered(code: int) -> None:
    decision = decide(_status(code), CONFIG, 1, T0, T0)
    assert decision.verdict is Verdict.delivered and decision.last_status == f"0x{code:04X}"


@pytest.mark.parametrize("code", [0x0122, 0xA900, 0xA9FF, 0xC000, 0xC123, 0x0117])
def test_permanent_refusals_fail_at_once_with_the_status(code: int) -> None:
    decision = decide(_status(code), CONFIG, 1, T0, T0)
    assert decision.verdict is Verdict.failed and decision.last_status == f"0x{code:04X}"
    assert f"0x{code:04X}" in decision.error


@pytest.mark.parametrize("kind", [Failure.rejected_permanent, Failure.not_accepted, Failure.invalid])
def test_permanent_failures_fail_at_once(kind: Failure) -> None:
    assert decide(_failure(kind), CONFIG, 1, T0, T0).verdict is Verdict.failed


@pytest.mark.parametrize("outcome", [_failure(Failure.connection), _failure(Failure.timeout),
                                     _failure(Failure.aborted), _failure(Failure.rejected_transient), _status(0xA700)])
def test_transient_problems_retry(outcome: StoreOutcome) -> None:
    decision = decide(outcome, CONFIG, 1, T0, T0)
    assert decision.verdict is Verdict.retry and decision.next_attempt_at == T0 + dt.timedelta(seconds=5)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [retry_delay(CONFIG, n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert retry_delay(CONFIG, 10_000) == 60


def test_gives_up_after_the_total() -> None:
    late = T0 + dt.timedelta(seconds=290)
    decision = decide(_failure(Failure.connection), CONFIG, 9, T0, late)
    assert decision.verdict is Verdict.failed and "pacsnode retry" in decision.error
