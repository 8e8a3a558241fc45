"""Association negotiation as the acceptor, with pynetdicom's PDU classes and context negotiation.

pynetdicom decodes an A-ASSOCIATE-RQ, negotiates its presentation contexts and encodes the
A-ASSOCIATE-AC or -RJ. That is costly for the 128 contexts `storescu` proposes, and a sender
proposes the same contexts on every association, so :class:`Negotiator` remembers the outcome for
each distinct proposal: the bytes after the AE titles. Only the AE titles differ between its requests.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ
from pynetdicom.pdu import A_ASSOCIATE_RQ as AssociateRequestPdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from node.dicom.upper_layer import pdu
from node.dicom.upper_layer.pdu import ABORT_INVALID_PARAMETER, HEADER, ProtocolError

APPLICATION_CONTEXT_NAME = UID("1.2.840.10008.3.1.1.1")
# PS3.8 9.3.2/9.3.3: protocol version, reserved, called AE title, calling AE title, 32 reserved bytes
FIXED_FIELDS = struct.Struct(">HH16s16s32x")
PROTOCOL_VERSION = 0x0001
REMEMBERED_PROPOSALS = 64


@dataclass(frozen=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class AssociationRequest:
    """What the acceptor needs from an A-ASSOCIATE-RQ."""

    calling_ae_title: str
    called_ae_title: str
    proposal: bytes  # the variable items: application context, presentation contexts, user information


@dataclass(frozen=True)
class Negotiated:
    """The acceptor's answer to one proposal, whoever makes it."""

    accepted: dict[int, AcceptedContext]
    peer_max_pdu_length: int  # 0: unlimited
    answer_items: bytes  # the A-ASSOCIATE-AC's variable items


class Negotiator:
    """Decodes A-ASSOCIATE-RQs and negotiates them against ``supported``; thread-safe.

    The outcome for each distinct proposal is kept (the last ``remembered`` of them), so a sender that
    opens many associations is decoded and negotiated by pynetdicom once.
    """

    def __init__(self, supported: list[PresentationContext], max_pdu_length: int,
                 remembered: int = REMEMBERED_PROPOSALS) -> None:
        self.supported = supported
        self.max_pdu_length = max_pdu_length
        self.remembered = remembered
        self._outcomes: OrderedDict[bytes, Negotiated] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, body: bytes | memoryview) -> AssociationRequest:
        """Read an A-ASSOCIATE-RQ body (the bytes after the PDU header); raises ProtocolError."""
        body = bytes(body)
        if len(body) < FIXED_FIELDS.size:
            raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {len(body)} bytes is shorter than its fixed fields",
                                ABORT_INVALID_PARAMETER)
        _version, _reserved, called, calling = FIXED_FIELDS.unpack_from(body)
        titles = AssociateRequestPdu()
        try:
            titles.called_ae_title = called  # pynetdicom's own checks: not all spaces, valid characters
            titles.calling_ae_title = calling
        except Exception as exc:
            raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {type(exc).__name__}: {exc}",
                                ABORT_INVALID_PARAMETER) from exc
        request = AssociationRequest(titles.calling_ae_title.strip(), titles.called_ae_title.strip(),
                                     body[FIXED_FIELDS.size:])
        self.negotiate(request)  # a malformed proposal is refused before the node decides anything
        return request

    def accept(self, request: AssociationRequest) -> tuple[bytes, Negotiated]:
        """The encoded A-ASSOCIATE-AC PDU for ``request``, and what was negotiated."""
        outcome = self.negotiate(request)
        fixed = FIXED_FIELDS.pack(PROTOCOL_VERSION, 0, _ae_field(request.called_ae_title),
                                  _ae_field(request.calling_ae_title))
        return pdu.encode_pdu(pdu.A_ASSOCIATE_AC, fixed + outcome.answer_items), outcome

    def negotiate(self, request: AssociationRequest) -> Negotiated:
        """The outcome for ``request``'s proposal: remembered, or worked out by pynetdicom."""
        with self._lock:
            outcome = self._outcomes.get(request.proposal)
            if outcome is not None:
                self._outcomes.move_to_end(request.proposal)
                return outcome
        outcome = self._negotiate(request.proposal)
        with self._lock:
            self._outcomes[request.proposal] = outcome
            while len(self._outcomes) > self.remembered:
                self._outcomes.popitem(last=False)
        return outcome

    def _negotiate(self, proposal: bytes) -> Negotiated:
        request = AssociateRequestPdu()
        try:
            # The AE titles do not affect the outcome (accept() fills in the real ones): placeholders here.
            request.decode(pdu.encode_pdu(pdu.A_ASSOCIATE_RQ, FIXED_FIELDS.pack(
                PROTOCOL_VERSION, 0, b"PACSNODE".ljust(16), b"PEER".ljust(16)) + proposal))
            primitive = request.to_primitive()
            peer_max = int(primitive.maximum_length_received or 0)
        except Exception as exc:  # pynetdicom raises many types for malformed items
            raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {type(exc).__name__}: {exc}",
                                ABORT_INVALID_PARAMETER) from exc
        roles = {
            item.sop_class_uid: (item.scu_role, item.scp_role)
            for item in primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        }
        results, role_replies = negotiate_as_acceptor(primitive.presentation_context_definition_list,
                                                      self.supported, roles)
        response = A_ASSOCIATE()
        response.application_context_name = APPLICATION_CONTEXT_NAME
        response.calling_ae_title = primitive.calling_ae_title
        response.called_ae_title = primitive.called_ae_title
        response.result = 0x00
        response.result_source = 0x01
        response.presentation_context_definition_results_list = results
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.max_pdu_length
        class_uid = ImplementationClassUIDNotification()
        class_uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        response.user_information = [max_length, class_uid, version, *role_replies]
        accepted = {
            int(cx.context_id): AcceptedContext(int(cx.context_id), str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in results
            if cx.result == 0x00 and cx.context_id is not None
        }
        encoded = A_ASSOCIATE_AC(response).encode()
        return Negotiated(accepted, peer_max, encoded[HEADER.size + FIXED_FIELDS.size:])


def _ae_field(title: str) -> bytes:
    """An AE title as the 16-byte field the A-ASSOCIATE-AC echoes (padded with spaces, as pynetdicom does)."""
    return title.ljust(16).encode("ascii", "replace")


def reject(result: int, source: int, diagnostic: int) -> bytes:
    """An encoded A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    primitive = A_ASSOCIATE()
    primitive.result = result
    primitive.result_source = source
    primitive.diagnostic = diagnostic
    return A_ASSOCIATE_RJ(primitive).encode()
