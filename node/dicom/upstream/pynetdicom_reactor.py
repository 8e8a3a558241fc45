"""Fence: a race-free pause switch for the reactor of a pynetdicom association this node opens.

``install(assoc)`` right after an association is established; every request on it (C-STORE, C-ECHO) then
waits for its own response, however quickly the peer answers. It replaces pynetdicom's private
``Association._reactor_checkpoint`` (a ``threading.Event``) and drives its private ``_is_paused`` flag, as
pynetdicom 3.0 has them (pyproject bounds pynetdicom below 3.1); ``missing_upstream()`` lists what an upgrade
removed. The figures behind it are in the README's benchmark section.

Upstream report (a bug), to file with pynetdicom::

    Title: A quick C-STORE-RSP can be taken by the reactor as "unexpected", leaving the request to time out

    Association.send_c_store (and the other send_* methods) clear _reactor_checkpoint and then wait while
    `not self._is_paused`. But _is_paused is still True from the reactor's previous pause when the next
    request begins, so the wait ends at once and the request goes out while the reactor thread is waking up.
    If the peer answers quickly, the reactor reads the response off the DIMSE queue itself and logs it as an
    unexpected message; the requestor then waits a full DIMSE timeout and aborts the association.
    Reproduction: 3,000 small C-STOREs on one association to DCMTK storescp on loopback lose a response in
    about one run of three. Suggested fix: reset _is_paused to False when the checkpoint is cleared, and set
    it to True each time the reactor blocks on the checkpoint (a Condition rather than an Event).
"""

from __future__ import annotations

import threading

from pynetdicom.association import Association


class ReactorCheckpoint:
    """pynetdicom's switch that pauses an association's reactor while a request waits for its response,
    without the race of the ``threading.Event`` it replaces.

    Before each request pynetdicom clears the switch and waits until the reactor says it is paused
    (``_is_paused``); after the response it sets the switch again. But ``_is_paused`` is still True from the
    reactor's previous wait when the next request begins, so the request goes out while the reactor wakes
    up, and the reactor can take the new C-STORE-RSP off the queue as an "unexpected" message: the sender
    then waits a whole DIMSE timeout and the association is aborted (README, benchmarks). Here clearing
    the switch marks the reactor unpaused, and the reactor marks itself paused each time it blocks on the
    switch, so a request goes out only once it really waits. Once the reactor has ended (the peer aborted,
    the connection closed) it counts as paused for good: pynetdicom's own ``kill`` leaves ``_is_paused`` True,
    and a request made after it must not wait for a pause that never comes.
    """

    def __init__(self, assoc: Association) -> None:
        self._assoc = assoc
        self._changed = threading.Condition()
        self._open = True
        self._ended = False

    def mark_ended(self) -> None:
        """The reactor has ended (the peer aborted, the connection closed, a release): from now on it counts as
        paused for good, or a request made meanwhile would wait for it to pause for ever."""
        with self._changed:
            self._ended = True
            self._assoc._is_paused = True

    def set(self) -> None:
        with self._changed:
            self._open = True
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._open = False
            if threading.current_thread() is not self._assoc and not self._ended:  # the reactor may pause itself
                self._assoc._is_paused = False

    def is_set(self) -> bool:
        return self._open

    def wait(self, timeout: float | None = None) -> bool:
        with self._changed:
            while not self._open:
                self._assoc._is_paused = True
                if not self._changed.wait(timeout):
                    return self._open
            return True


def missing_upstream() -> list[str]:
    """What this fence replaces that the installed pynetdicom no longer has (empty when all is there)."""
    from pynetdicom import AE

    assoc = Association(AE(), "requestor")
    return [f"pynetdicom.association.Association.{name}" for name in ("_reactor_checkpoint", "_is_paused")
            if not hasattr(assoc, name)]


def install(assoc: Association) -> Association:
    """Give ``assoc`` the race-free switch (an established association's reactor is not blocked on it)."""
    checkpoint = ReactorCheckpoint(assoc)
    assoc._reactor_checkpoint = checkpoint  # type: ignore[assignment]
    kill = assoc.kill

    def kill_and_mark() -> None:
        kill()
        checkpoint.mark_ended()

    assoc.kill = kill_and_mark  # type: ignore[method-assign]
    return assoc
