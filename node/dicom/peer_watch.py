"""What a peer did to an association pacsnode opened: rejected it, aborted it, or dropped the connection.

pynetdicom stops waiting for a response as soon as the peer aborts or the connection closes, but leaves the
requestor to guess why; a delivery then reads "no response" as a DIMSE timeout. :class:`PeerWatch` listens to
the association's events (bound when it is requested) and says what ended it: an A-ABORT with its source and
reason, or a closed or reset connection.

It also finds an A-ASSOCIATE-RJ the requestor did not read: a peer that rejects and closes at once can have
its connection closed by pynetdicom's reader before the requestor looks, which pynetdicom reports as an abort.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

# PS3.8 9.3.8: A-ABORT source and the service provider's reasons
_ABORT_SOURCES = {0x00: "service user", 0x01: "reserved source", 0x02: "service provider"}
_ABORT_REASONS = {0x00: "reason not specified", 0x01: "unrecognized PDU", 0x02: "unexpected PDU",
                  0x04: "unrecognized PDU parameter", 0x05: "unexpected PDU parameter",
                  0x06: "invalid PDU parameter value"}


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ as received: result (1 permanent, 2 transient), source, diagnostic, in words."""

    result: int
    source: int
    diagnostic: int
    text: str

    @property
    def permanent(self) -> bool:
        return self.result == 0x01


class PeerWatch:
    """Collects what the peer does to one association; bind :meth:`handlers` when requesting it.

    ``connected``: the TCP connection was made; ``answered``: an association response was read;
    ``rejection``: the A-ASSOCIATE-RJ, if any; :meth:`ended` says why an established association is gone.
    Nagle's algorithm is switched off on the connection (pynetdicom has no option for it).
    """

    def __init__(self) -> None:
        self.connected = False
        self.answered = False
        self.rejection: Rejection | None = None
        self._abort: str | None = None
        self._closed = threading.Event()

    def handlers(self) -> list[Any]:
        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_ACSE_RECV, self._on_acse),
                (evt.EVT_PDU_RECV, self._on_pdu), (evt.EVT_CONN_CLOSE, self._on_close)]

    def ended(self) -> str | None:
        """Why the association is gone (an A-ABORT, or the connection closed or reset), or None while it is up."""
        if self._abort is not None:
            return self._abort
        if self._closed.is_set():
            return "the connection was closed or reset"
        return None

    def find_unread_rejection(self, assoc: Association) -> Rejection | None:
        """The A-ASSOCIATE-RJ left in pynetdicom's queue when the requestor saw the closed connection first."""
        if self.rejection is None:
            pending = assoc.dul.to_user_queue
            with pending.mutex:
                primitives = list(pending.queue)
            for primitive in primitives:
                if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
                    self.rejection = rejection_of(primitive)
                    self.answered = True
        return self.rejection

    def _on_open(self, event: evt.Event) -> None:
        self.connected = True
        raw = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if raw is not None:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_acse(self, event: evt.Event) -> None:
        self.answered = True
        primitive = event.primitive
        if isinstance(primitive, A_ASSOCIATE) and primitive.result in (0x01, 0x02):
            self.rejection = rejection_of(primitive)

    def _on_pdu(self, event: evt.Event) -> None:
        if isinstance(event.pdu, A_ABORT_RQ):
            self._abort = describe_abort(event.pdu.source, event.pdu.reason_diagnostic)

    def _on_close(self, _event: evt.Event) -> None:
        self._closed.set()


def describe_abort(source: int | None, reason: int | None) -> str:
    """An A-ABORT in words: 'A-ABORT from the service provider: unexpected PDU'."""
    text = f"A-ABORT from the {_ABORT_SOURCES.get(source, f'source {source}')}"  # type: ignore[arg-type]
    if source == 0x02:
        text += f": {_ABORT_REASONS.get(reason, f'reason {reason}')}"  # type: ignore[arg-type]
    return text


def rejection_of(primitive: A_ASSOCIATE) -> Rejection:
    """The result, source and diagnostic of an A-ASSOCIATE-RJ primitive, worded as pynetdicom words them."""
    text = f"{primitive.result_str}, source {primitive.source_str}: {primitive.reason_str}"
    return Rejection(int(primitive.result), int(primitive.result_source), int(primitive.diagnostic), text)
