"""The collector pause used while reading series and building SEGs: nested pauses, and a collector left as found."""

from __future__ import annotations

import gc

from pipelines.gc_pause import paused_gc


def test_the_collector_is_off_until_the_outermost_pause_ends() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled(), "an inner pause ending must not resume the collector"
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_resumes_when_the_block_raises() -> None:
    try:
        with paused_gc():
            raise RuntimeError("unreadable series")
    except RuntimeError:
        pass
    assert gc.isenabled()
