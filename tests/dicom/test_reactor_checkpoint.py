"""The reactor switch of pacsnode's SCU associations: a request goes out only once the reactor really waits.

pynetdicom's own switch (a threading.Event) lets a request go out while its reactor is still waking from the
previous pause, and the reactor can then take the new response off the queue (the sender waits a whole
DIMSE timeout). These tests run the reactor's loop as pynetdicom writes it against pacsnode's switch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage

from node.dicom.upstream.pynetdicom_reactor import ReactorCheckpoint
from node.dicom.scu import send_objects
from node.waiting import wait_until
from tests.support.peers import StoreSCP


class _Assoc:
    _is_paused = False


def _reactor(assoc: _Assoc, checkpoint: ReactorCheckpoint, passes: list[float], stop: threading.Event) -> None:
    """pynetdicom's Association._run_reactor, reduced to its pause protocol."""
    while not stop.is_set():
        time.sleep(0.001)
        assoc._is_paused = True
        checkpoint.wait()
        assoc._is_paused = False
        passes.append(time.monotonic())  # where pynetdicom takes a message off the DIMSE queue


def test_a_request_waits_until_the_reactor_is_paused_again() -> None:
    assoc, passes, stop = _Assoc(), [], threading.Event()
    checkpoint = ReactorCheckpoint(assoc)  # type: ignore[arg-type]
    checkpoint.clear()
    reactor = threading.Thread(target=_reactor, args=(assoc, checkpoint, passes, stop), daemon=True)
    reactor.start()
    try:
        for _ in range(200):  # request after request, as a series is sent
            wait_until(lambda: assoc._is_paused, 5, "the reactor to pause", 0.0001)
            paused_passes = len(passes)
            time.sleep(0.002)  # the request is on the wire; the reactor must not look at the queue now
            assert len(passes) == paused_passes
            checkpoint.set()  # the response arrived: the reactor may run
            checkpoint.clear()  # the next request, at once
            assert not assoc._is_paused  # pynetdicom's Event leaves the previous pause standing here
    finally:
        stop.set()
        checkpoint.set()
        reactor.join(5)


def test_the_reactor_pausing_itself_is_not_undone() -> None:
    """On a network timeout pynetdicom's reactor marks itself paused, then clears the switch itself to release."""

    class ReactorThread(threading.Thread):
        _is_paused = True

    seen: list[bool] = []
    thread = ReactorThread(target=lambda: (checkpoint.clear(), seen.append(thread._is_paused)))
    checkpoint = ReactorCheckpoint(thread)  # type: ignore[arg-type]
    thread.start()
    thread.join(5)
    assert seen == [True]


def test_many_quick_answers_each_reach_their_request(storescp: StoreSCP, tmp_path: Path) -> None:
    """Small objects answered at once: the pattern that lost responses with pynetdicom's own switch."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.PatientID = CTImageStorage, "X"
    ds.file_meta = pydicom.Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    objects = []
    for _ in range(600):
        copy = pydicom.Dataset(ds)
        copy.file_meta = ds.file_meta
        copy.SOPInstanceUID = generate_uid()
        objects.append(copy)
    outcomes = send_objects(objects, storescp.ae_title, "127.0.0.1", storescp.port, dimse_timeout=10)
    assert [o.describe() for o in outcomes if not o.stored] == []


def test_a_request_after_the_reactor_ended_does_not_wait_for_it() -> None:
    """The peer aborted and the reactor ended between two requests: the next request must not wait for the
    ended reactor to pause (it never would)."""
    assoc = _Assoc()
    checkpoint = ReactorCheckpoint(assoc)  # type: ignore[arg-type]
    checkpoint.mark_ended()
    checkpoint.clear()
    assert assoc._is_paused
