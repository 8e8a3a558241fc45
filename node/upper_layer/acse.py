"""Association negotiation as the acceptor, with pynetdicom's PDU classes and context negotiation.

Decoding the A-ASSOCIATE-RQ, negotiating presentation contexts and encoding the A-ASSOCIATE-AC or -RJ
happen once per association, so pynetdicom's general code is used as it is.
"""

from __future__ import annotations

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

from node.upper_layer.pdu import ABORT_INVALID_PARAMETER, ProtocolError

APPLICATION_CONTEXT_NAME = UID("1.2.840.10008.3.1.1.1")


@dataclass(frozen=True)
class AssociationRequest:
    """What the acceptor needs from an A-ASSOCIATE-RQ."""

    calling_ae_title: str
    called_ae_title: str
    peer_max_pdu_length: int  # 0: unlimited
    primitive: A_ASSOCIATE


@dataclass(frozen=True)
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


def decode_request(body: bytes | memoryview) -> AssociationRequest:
    """Decode an A-ASSOCIATE-RQ body (the bytes after the PDU header); raises ProtocolError."""
    pdu = AssociateRequestPdu()
    try:
        pdu.decode(b"\x01\x00" + len(body).to_bytes(4, "big") + bytes(body))
        primitive = pdu.to_primitive()
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
    except Exception as exc:  # pynetdicom raises many types for malformed items
        raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {type(exc).__name__}: {exc}", ABORT_INVALID_PARAMETER) from exc
    return AssociationRequest(calling, called, int(primitive.maximum_length_received or 0), primitive)


def accept(
    request: AssociationRequest, supported: list[PresentationContext], max_pdu_length: int
) -> tuple[bytes, dict[int, AcceptedContext]]:
    """Negotiate contexts; return the encoded A-ASSOCIATE-AC PDU and the accepted contexts by ID."""
    primitive = request.primitive
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    results, role_replies = negotiate_as_acceptor(primitive.presentation_context_definition_list, supported, roles)
    response = A_ASSOCIATE()
    response.application_context_name = APPLICATION_CONTEXT_NAME
    response.calling_ae_title = primitive.calling_ae_title
    response.called_ae_title = primitive.called_ae_title
    response.result = 0x00
    response.result_source = 0x01
    response.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu_length
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
    return A_ASSOCIATE_AC(response).encode(), accepted


def reject(result: int, source: int, diagnostic: int) -> bytes:
    """An encoded A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    primitive = A_ASSOCIATE()
    primitive.result = result
    primitive.result_source = source
    primitive.diagnostic = diagnostic
    return A_ASSOCIATE_RJ(primitive).encode()
