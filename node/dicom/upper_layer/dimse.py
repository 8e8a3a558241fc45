"""DIMSE command sets (implicit VR little endian, group 0000) and the assembly of messages from PDVs.

Command sets are read and written by hand: pydicom's general codec (decode the request, encode the response)
is a large share of the whole receive path; the group 0000 elements
used here have fixed VRs (PS3.7 E.1) and tests compare the results with pydicom's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from node.dicom.upper_layer.pdu import ABORT_UNEXPECTED_PARAMETER, PDV_HEADER, ProtocolError

ELEMENT_HEADER = struct.Struct("<HHI")  # group, element, value length (implicit VR)

AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
AFFECTED_SOP_INSTANCE_UID = 0x1000
UID_ELEMENTS = frozenset({AFFECTED_SOP_CLASS_UID, AFFECTED_SOP_INSTANCE_UID})
US_ELEMENTS = frozenset({COMMAND_FIELD, MESSAGE_ID, COMMAND_DATA_SET_TYPE})
NO_DATA_SET = 0x0101

C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
RESPONSE_BIT = 0x8000

COMMAND_FRAGMENT = 0x01
LAST_FRAGMENT = 0x02


@dataclass(frozen=True)
class Command:
    """The fields of a request command set the receiver acts on."""

    command_field: int
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    has_data_set: bool


def decode_command(encoded: bytes | bytearray) -> Command:
    """Read a command set; raises ProtocolError when it is truncated or lacks Command Field."""
    values: dict[int, int | str] = {}
    offset, end = 0, len(encoded)
    while offset < end:
        if end - offset < ELEMENT_HEADER.size:
            raise ProtocolError("command set ends inside an element header", ABORT_UNEXPECTED_PARAMETER)
        group, element, length = ELEMENT_HEADER.unpack_from(encoded, offset)
        offset += ELEMENT_HEADER.size
        if group != 0x0000 or length > end - offset:
            raise ProtocolError(f"malformed command set element ({group:04X},{element:04X})",
                                ABORT_UNEXPECTED_PARAMETER)
        if element in US_ELEMENTS and length == 2:
            values[element] = int.from_bytes(encoded[offset : offset + 2], "little")
        elif element in UID_ELEMENTS:
            values[element] = bytes(encoded[offset : offset + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        offset += length
    if COMMAND_FIELD not in values:
        raise ProtocolError("command set without Command Field (0000,0100)", ABORT_UNEXPECTED_PARAMETER)
    return Command(
        command_field=int(values[COMMAND_FIELD]),
        message_id=int(values.get(MESSAGE_ID, 0)),
        affected_sop_class_uid=str(values.get(AFFECTED_SOP_CLASS_UID, "")),
        affected_sop_instance_uid=str(values.get(AFFECTED_SOP_INSTANCE_UID, "")),
        has_data_set=values.get(COMMAND_DATA_SET_TYPE, NO_DATA_SET) != NO_DATA_SET,
    )


def _uid(element: int, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    return ELEMENT_HEADER.pack(0, element, len(raw)) + raw


def _us(element: int, value: int) -> bytes:
    return ELEMENT_HEADER.pack(0, element, 2) + value.to_bytes(2, "little")


def encode_response(request: Command, status: int) -> bytes:
    """The response command set to ``request`` (C-STORE-RSP, C-ECHO-RSP or any other -RSP) with ``status``."""
    body = b"".join((
        _uid(AFFECTED_SOP_CLASS_UID, request.affected_sop_class_uid) if request.affected_sop_class_uid else b"",
        _us(COMMAND_FIELD, request.command_field | RESPONSE_BIT),
        _us(MESSAGE_ID_BEING_RESPONDED_TO, request.message_id),
        _us(COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        _us(STATUS, status),
        _uid(AFFECTED_SOP_INSTANCE_UID, request.affected_sop_instance_uid) if request.affected_sop_instance_uid
        else b"",
    ))
    return ELEMENT_HEADER.pack(0, 0x0000, 4) + len(body).to_bytes(4, "little") + body


@dataclass
class Message:
    """One complete DIMSE request: its context, command and (for C-STORE) the encoded dataset."""

    context_id: int
    command: Command
    data_set: bytearray | None


class MessageAssembler:
    """Collects the PDVs of P-DATA-TF PDUs into whole messages (PS3.8 E.2, PS3.7 6.3.1).

    ``accepted`` holds the accepted presentation context IDs; a PDV for any other context, a dataset
    fragment before its command, or a command fragment in the middle of a dataset is a protocol error.
    """

    def __init__(self, accepted: set[int]) -> None:
        self.accepted = accepted
        self._context_id: int | None = None
        self._command_bytes = bytearray()
        self._command: Command | None = None
        self._data_set = bytearray()

    def feed(self, body: memoryview) -> list[Message]:
        """Take one P-DATA-TF body; return the messages it completes."""
        complete: list[Message] = []
        offset, end = 0, len(body)
        if end < PDV_HEADER.size:
            raise ProtocolError("P-DATA-TF without a presentation data value item")
        while offset < end:
            if end - offset < PDV_HEADER.size:
                raise ProtocolError("P-DATA-TF ends inside a PDV item header")
            length, context_id, control = PDV_HEADER.unpack_from(body, offset)
            fragment_end = offset + 4 + length
            if length < 2 or fragment_end > end:
                raise ProtocolError(f"PDV item length {length} does not fit its P-DATA-TF")
            if context_id not in self.accepted:
                raise ProtocolError(f"PDV for presentation context {context_id}, which was not accepted",
                                    ABORT_UNEXPECTED_PARAMETER)
            message = self._take(context_id, control, body[offset + PDV_HEADER.size : fragment_end])
            if message is not None:
                complete.append(message)
            offset = fragment_end
        return complete

    def _take(self, context_id: int, control: int, fragment: memoryview) -> Message | None:
        if self._context_id is not None and context_id != self._context_id:
            raise ProtocolError(f"PDV for context {context_id} inside a message on context {self._context_id}",
                                ABORT_UNEXPECTED_PARAMETER)
        self._context_id = context_id
        if control & COMMAND_FRAGMENT:
            if self._command is not None:
                raise ProtocolError("command fragment while the data set was expected", ABORT_UNEXPECTED_PARAMETER)
            self._command_bytes += fragment
            if not control & LAST_FRAGMENT:
                return None
            self._command = decode_command(self._command_bytes)
            self._command_bytes = bytearray()
            if self._command.has_data_set:
                return None
            return self._finish(None)
        if self._command is None:
            raise ProtocolError("data set fragment before its command", ABORT_UNEXPECTED_PARAMETER)
        self._data_set += fragment
        if not control & LAST_FRAGMENT:
            return None
        data_set, self._data_set = self._data_set, bytearray()
        return self._finish(data_set)

    def _finish(self, data_set: bytearray | None) -> Message:
        assert self._context_id is not None and self._command is not None
        message = Message(self._context_id, self._command, data_set)
        self._context_id, self._command = None, None
        return message

    @property
    def in_progress(self) -> bool:
        """True while a message has been started but not completed."""
        return self._context_id is not None
