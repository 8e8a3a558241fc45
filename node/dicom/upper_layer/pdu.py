"""Reading PDUs off a socket into one reusable buffer, and encoding the small PDUs the acceptor sends.

PS3.8 9.3: every PDU starts with a type byte, a reserved byte and a 4-byte big-endian length.
"""

from __future__ import annotations

import socket
import struct
import time

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
KNOWN_TYPES = frozenset(range(0x01, 0x08))

# A-ABORT reasons when the service provider aborts (source 0x02), PS3.8 9.3.8
ABORT_NOT_SPECIFIED = 0x00
ABORT_UNRECOGNIZED_PDU = 0x01
ABORT_UNEXPECTED_PDU = 0x02
ABORT_UNRECOGNIZED_PARAMETER = 0x04
ABORT_UNEXPECTED_PARAMETER = 0x05
ABORT_INVALID_PARAMETER = 0x06

HEADER = struct.Struct(">BxI")
PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, message control header
INITIAL_BUFFER = 16 * 1024  # grows (doubling) only as bytes arrive, never to what a peer merely declares
_UNCHANGED = object()


class PeerClosed(ConnectionError):
    """The peer closed the connection (possibly in the middle of a PDU)."""


class PduTooSlow(TimeoutError):
    """A PDU did not arrive whole by its deadline, however steadily its bytes trickled in."""


class ProtocolError(ValueError):
    """The peer sent something PS3.8 does not allow; ``reason`` is the A-ABORT reason to send."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Reads whole PDUs from a socket; each body is a view into a buffer reused by the next read.

    ``max_length`` bounds a PDU body (0: unbounded); a longer one is a protocol error. The buffer grows with the
    bytes that actually arrive, so a PDU that declares a large length and then stalls costs what it sent, not
    what it declared. ``pdu_seconds`` (0: none) is how long one PDU may take from its first byte to its last:
    the socket's own timeout only bounds each wait for more bytes, which a peer trickling a byte at a time
    never exceeds.
    """

    def __init__(self, sock: socket.socket, max_length: int, pdu_seconds: float = 0.0) -> None:
        self.sock = sock
        self.max_length = max_length
        self.pdu_seconds = pdu_seconds
        self._buffer = bytearray(INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._deadline: float | None = None

    def read(self, deadline: float | None = None) -> tuple[int, memoryview]:
        """The next PDU's type and body. Raises PeerClosed, ProtocolError, PduTooSlow or socket.timeout.

        ``deadline`` (time.monotonic()) overrides ``pdu_seconds``: the whole PDU must have arrived by then.
        """
        self._deadline = deadline
        if deadline is None and self.pdu_seconds and self._end > self._start:
            self._deadline = time.monotonic() + self.pdu_seconds  # the PDU has begun already
        self._fill(HEADER.size)
        pdu_type, length = HEADER.unpack_from(self._buffer, self._start)
        if pdu_type not in KNOWN_TYPES:
            raise ProtocolError(f"unrecognised PDU type 0x{pdu_type:02X}", ABORT_UNRECOGNIZED_PDU)
        if self.max_length and length > self.max_length:
            raise ProtocolError(f"PDU of {length} bytes exceeds the limit of {self.max_length} (type 0x{pdu_type:02X})")
        self._fill(HEADER.size + length)
        body_start = self._start + HEADER.size
        self._start = body_start + length
        return pdu_type, self._view[body_start : self._start]

    def _fill(self, count: int) -> None:
        """Make at least ``count`` unread bytes available from ``_start``."""
        restore: object = _UNCHANGED  # the socket's own timeout, while a wait is cut short by the deadline
        try:
            while self._end - self._start < count:
                if self._end == len(self._buffer):
                    self._make_room(count)
                if self._deadline is not None:
                    restore = self._shorten_wait(restore)
                received = self.sock.recv_into(self._view[self._end :])
                if received == 0:
                    raise PeerClosed("the peer closed the connection")
                if self._deadline is None and self.pdu_seconds:
                    self._deadline = time.monotonic() + self.pdu_seconds  # the first bytes of this PDU
                self._end += received
        except TimeoutError:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise PduTooSlow(f"incomplete at its deadline ({self._end - self._start} bytes arrived)") from None
            raise
        finally:
            if restore is not _UNCHANGED:
                self.sock.settimeout(restore)  # type: ignore[arg-type]

    def _shorten_wait(self, restore: object) -> object:
        """Cut the next wait to the PDU's deadline when that comes first (a system call, so only then)."""
        assert self._deadline is not None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise PduTooSlow(f"incomplete at its deadline ({self._end - self._start} bytes arrived)")
        current = self.sock.gettimeout()
        if current is None or left < current:
            if restore is _UNCHANGED:
                restore = current
            self.sock.settimeout(left)
        return restore

    def _make_room(self, count: int) -> None:
        """Room to receive more of a PDU that needs ``count`` unread bytes: move the unread bytes to the front,
        or double the buffer when they fill it (up to room for the PDU and most of the next one)."""
        pending = self._end - self._start
        if self._start and pending < len(self._buffer) // 2:
            self._buffer[:pending] = self._buffer[self._start : self._end]
        else:
            self._view.release()
            grown = bytearray(max(len(self._buffer), min(2 * len(self._buffer), 2 * count)))
            grown[:pending] = self._buffer[self._start : self._end]
            self._buffer = grown
            self._view = memoryview(grown)
        self._start, self._end = 0, pending


def encode_pdu(pdu_type: int, body: bytes) -> bytes:
    return HEADER.pack(pdu_type, len(body)) + body


def release_rp() -> bytes:
    return encode_pdu(A_RELEASE_RP, b"\x00\x00\x00\x00")


def abort(reason: int = ABORT_NOT_SPECIFIED, *, by_provider: bool = True) -> bytes:
    """An A-ABORT PDU; the service provider (source 2) gives a reason, the user (source 0) none."""
    source = 0x02 if by_provider else 0x00
    return encode_pdu(A_ABORT, bytes((0, 0, source, reason if by_provider else 0)))


def p_data(context_id: int, control: int, payload: bytes, max_pdu_length: int) -> bytes:
    """``payload`` as P-DATA-TF PDUs of one PDV each, fragmented to the peer's maximum PDU length.

    ``control`` is the message control header of the last fragment (bit 0: command, bit 1: last).
    """
    room = len(payload) if max_pdu_length == 0 else max(1, max_pdu_length - PDV_HEADER.size)
    pieces = []
    for offset in range(0, max(len(payload), 1), room):
        fragment = payload[offset : offset + room]
        last = offset + room >= len(payload)
        header = PDV_HEADER.pack(len(fragment) + 2, context_id, control if last else control & 0x01)
        pieces.append(HEADER.pack(P_DATA_TF, len(header) + len(fragment)) + header + fragment)
    return b"".join(pieces)
