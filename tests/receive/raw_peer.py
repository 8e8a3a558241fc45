"""A hand-driven DICOM requestor on a raw socket, for PDUs no well-behaved SCU would send.

A-ASSOCIATE-RQ and C-STORE-RQ command sets are built with pynetdicom's own classes, so what the node
receives is valid except for the one defect a test puts in.
"""

from __future__ import annotations

import socket
import struct
from io import BytesIO

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import build_context

HEADER = struct.Struct(">BxI")


def pdu(pdu_type: int, body: bytes) -> bytes:
    return HEADER.pack(pdu_type, len(body)) + body


def pdv(context_id: int, control: int, payload: bytes) -> bytes:
    """One presentation data value item (control bit 0: command, bit 1: last fragment)."""
    return struct.pack(">IBB", len(payload) + 2, context_id, control) + payload


def associate_rq(*abstract_syntaxes: str, calling: str = "RAWPEER", called: str = "PACSNODE", max_pdu: int = 16384,
                 transfer_syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian,), roles: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing each abstract syntax (contexts 1, 3, 5...) in ``transfer_syntaxes``.

    ``roles`` adds an SCP/SCU role selection item (both roles) for the first abstract syntax.
    """
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    contexts = []
    for number, abstract_syntax in enumerate(abstract_syntaxes):
        context = build_context(abstract_syntax, list(transfer_syntaxes))
        context.context_id = 2 * number + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    items: list[object] = [max_length]
    if roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = abstract_syntaxes[0]
        role.scu_role, role.scp_role = True, True
        items.append(role)
    primitive.user_information = items
    return A_ASSOCIATE_RQ(primitive).encode()


def store_command(sop_class_uid: str, sop_instance_uid: str, message_id: int = 1) -> bytes:
    """An encoded C-STORE-RQ command set (implicit VR little endian) announcing a dataset."""
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = sop_class_uid
    request.AffectedSOPInstanceUID = sop_instance_uid
    request.Priority = 0
    request.DataSet = BytesIO(b"announced")  # only makes the command say a dataset follows
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return encode(message.command_set, True, True)


def echo_command(message_id: int = 1) -> bytes:
    """An encoded C-ECHO-RQ command set (implicit VR little endian)."""
    request = C_ECHO()
    request.MessageID = message_id
    request.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(request)
    return encode(message.command_set, True, True)


class RawPeer:
    """A connected socket with helpers to read the node's PDUs; ``source`` is the loopback address it calls
    from (127.0.0.2 and up look like other hosts to the node)."""

    def __init__(self, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_pdu(self) -> tuple[int, bytes] | None:
        """The next PDU (type, body), or None when the node closed the connection."""
        header = self._read(HEADER.size)
        if header is None:
            return None
        pdu_type, length = HEADER.unpack(header)
        body = self._read(length)
        return None if body is None else (pdu_type, body)

    def associate(self, abstract_syntax: str, **kwargs: object) -> A_ASSOCIATE_AC:
        """Request an association; return the decoded A-ASSOCIATE-AC (asserting it was accepted)."""
        self.send(associate_rq(abstract_syntax, **kwargs))  # type: ignore[arg-type]
        answer = self.read_pdu()
        assert answer is not None and answer[0] == 0x02, answer
        accepted = A_ASSOCIATE_AC()
        accepted.decode(pdu(0x02, answer[1]))
        return accepted

    def echo(self, context_id: int = 1, message_id: int = 1) -> int:
        """C-ECHO on an established association; the response's Status."""
        self.send(pdu(0x04, pdv(context_id, 0x03, echo_command(message_id))))
        return self.read_response_status()

    def read_response_status(self) -> int:
        """Read one P-DATA-TF carrying a whole response command set; return its Status."""
        answer = self.read_pdu()
        assert answer is not None and answer[0] == 0x04, answer
        command = decode(BytesIO(answer[1][6:]), True, True)
        return int(command.Status)

    def closed_after_abort(self) -> bool:
        """True when the node sends A-ABORT and then closes."""
        answer = self.read_pdu()
        return answer is not None and answer[0] == 0x07 and self.read_pdu() is None

    def _read(self, count: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = self.sock.recv(count - len(chunks))
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)
