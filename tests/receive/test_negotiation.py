"""Association negotiation: a remembered proposal is answered exactly as pynetdicom answers it afresh."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import negotiate_as_acceptor

from node.dicom.contexts import supported_contexts
from node.dicom.upper_layer.acse import Negotiator
from node.dicom.upper_layer.pdu import HEADER, ProtocolError
from tests.receive.raw_peer import associate_rq

MAX_PDU = 65536


def request_body(calling: str, called: str = "PACSNODE", *, syntaxes: tuple[str, ...] = (CTImageStorage,),
                 max_pdu: int = 16384, roles: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ body (after the PDU header) built by pynetdicom."""
    return associate_rq(*syntaxes, calling=calling, called=called, max_pdu=max_pdu, roles=roles,
                        transfer_syntaxes=(ExplicitVRLittleEndian, ImplicitVRLittleEndian))[HEADER.size:]


class CountingNegotiator(Negotiator):
    """Counts how often pynetdicom is asked to decode and negotiate."""

    calls = 0

    def _negotiate(self, body: bytes):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super()._negotiate(body)


def answer(negotiator: Negotiator, body: bytes) -> bytes:
    return negotiator.accept(negotiator.decode(body))[0]


def test_a_remembered_proposal_is_answered_byte_for_byte_as_a_fresh_one() -> None:
    remembering = CountingNegotiator(supported_contexts(), MAX_PDU)
    answer(remembering, request_body("FIRST", syntaxes=(CTImageStorage, MRImageStorage), roles=True))
    remembered = answer(remembering, request_body("SECOND", "OTHER", syntaxes=(CTImageStorage, MRImageStorage),
                                                  roles=True))
    fresh = answer(Negotiator(supported_contexts(), MAX_PDU),
                   request_body("SECOND", "OTHER", syntaxes=(CTImageStorage, MRImageStorage), roles=True))
    assert remembering.calls == 1
    assert remembered == fresh


def test_the_answer_echoes_the_titles_and_negotiates_as_pynetdicom() -> None:
    body = request_body("MODALITY", syntaxes=(CTImageStorage, MRImageStorage), max_pdu=32768, roles=True)
    negotiator = Negotiator(supported_contexts(), MAX_PDU)
    request = negotiator.decode(body)
    encoded, negotiated = negotiator.accept(request)

    assert (request.calling_ae_title, request.called_ae_title) == ("MODALITY", "PACSNODE")
    assert negotiated.peer_max_pdu_length == 32768
    reply = A_ASSOCIATE_AC()
    reply.decode(encoded)
    primitive = reply.to_primitive()
    assert (primitive.calling_ae_title, primitive.called_ae_title) == ("MODALITY", "PACSNODE")
    assert primitive.maximum_length_received == MAX_PDU
    proposed = A_ASSOCIATE_RQ()
    proposed.decode(HEADER.pack(0x01, len(body)) + body)
    proposal = proposed.to_primitive()
    roles = {item.sop_class_uid: (item.scu_role, item.scp_role) for item in proposal.user_information
             if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
    expected, role_replies = negotiate_as_acceptor(proposal.presentation_context_definition_list,
                                                   supported_contexts(), roles)
    answered = primitive.presentation_context_definition_results_list
    assert [(cx.context_id, cx.result, cx.transfer_syntax) for cx in answered] == \
        [(cx.context_id, cx.result, cx.transfer_syntax) for cx in expected]
    assert sorted(negotiated.accepted) == [1, 3]
    assert {cx.abstract_syntax for cx in negotiated.accepted.values()} == {CTImageStorage, MRImageStorage}
    answered_roles = [item for item in primitive.user_information if isinstance(item, SCP_SCU_RoleSelectionNegotiation)]
    assert len(answered_roles) == len(role_replies)


def test_only_the_last_proposals_are_remembered() -> None:
    negotiator = CountingNegotiator(supported_contexts(), MAX_PDU, remembered=2)
    first, second, third = (request_body("PEER", max_pdu=size) for size in (16384, 32768, 65536))
    for body in (first, second, third, first):
        answer(negotiator, body)
    assert negotiator.calls == 4  # the first proposal was forgotten when the third came
    answer(negotiator, third)
    assert negotiator.calls == 4


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\x00\x01" + b"\xff" * 40, "shorter than its fixed fields"),
        (request_body("PEER")[:68] + b"\x20\x00\x00\x09garbage", "malformed A-ASSOCIATE-RQ"),
        (request_body("PEER").replace(b"PEER".ljust(16), b" " * 16), "must not consist entirely of spaces"),
    ],
    ids=["truncated", "bad-items", "blank-calling-title"],
)
def test_malformed_requests_are_refused(body: bytes, problem: str) -> None:
    negotiator = Negotiator(supported_contexts(), MAX_PDU)
    with pytest.raises(ProtocolError, match=problem):
        negotiator.decode(body)
    assert not negotiator._outcomes  # nothing malformed is remembered
