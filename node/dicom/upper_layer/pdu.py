"""Reading PDUs off a socket into one reusable buffer, and encoding the small PDUs the acceptor sends.

PS3.8 9.3: every PDU starts with a type byte, a reserved byte and a 4-byte big-endian length.
"""

from __future__ import annotations

import socket
import struct

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
INITIAL_BUFFER = 256 * 1024  # grows to twice the largest PDU seen; zero-filled, so not larger up front


class PeerClosed(ConnectionError):
    """The peer closed the connection (possibly in the middle of a PDU)."""


class ProtocolError(ValueError):
    """The peer sent something PS3.8 does not allow; ``reason`` is the A-ABORT reason to send."""

    def __init__(self, message: str, reason: int = ABORT_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Reads whole PDUs from a socket; each body is a view into a buffer reused by the next read.

    ``max_length`` bounds a PDU body (0: unbounded); a longer one is a protocol error, so a peer cannot
    make the node allocate what it likes.
    """

    def __init__(self, sock: socket.socket, max_length: int) -> None:
        self.sock = sock
        self.max_length = max_length
        self._buffer = bytearray(INITIAL_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def read(self) -> tuple[int, memoryview]:
        """The next PDU's type and body. Raises PeerClosed, ProtocolError or socket.timeout."""
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
        if self._end - self._start >= count:
            return
        if self._start + count > len(self._buffer):
            self._compact(count)
        while self._end - self._start < count:
            received = self.sock.recv_into(self._view[self._end :])
            if received == 0:
                raise PeerClosed("the peer closed the connection")
            self._end += received

    def _compact(self, count: int) -> None:
        """Move the unread bytes to the front, growing the buffer when ``count`` bytes do not fit."""
        pending = self._end - self._start
        if 2 * count > len(self._buffer):  # room for a whole PDU plus most of the next one
            self._view.release()
            grown = bytearray(max(2 * count, 2 * len(self._buffer)))
            grown[:pending] = self._buffer[self._start : self._end]
            self._buffer = grown
            self._view = memoryview(grown)
        else:
            self._buffer[:pending] = self._buffer[self._start : self._end]
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
