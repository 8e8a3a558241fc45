"""One association as the acceptor: negotiate, answer C-ECHO and C-STORE, release or abort.

The thread that runs it blocks in the socket. The whole A-ASSOCIATE-RQ must arrive within ``acse_timeout`` of
the connection, and each later PDU within ``pdu_timeout`` of its first byte (deadlines, however slowly the
bytes trickle); the socket's own timeouts bound the silences (``network_timeout`` between PDUs,
``dimse_timeout`` inside a message). Nothing a peer sends can raise out of :func:`run_association`: every
protocol error ends in an A-ABORT and a log line.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from node.dicom.status import Status
from node.dicom.upper_layer import acse, pdu
from node.dicom.upper_layer.dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    RESPONSE_BIT,
    Command,
    Message,
    MessageAssembler,
    encode_response,
)

log = logging.getLogger(__name__)

ASSOCIATE_RQ_LIMIT = 1024 * 1024  # an A-ASSOCIATE-RQ proposing every storage SOP class is ~60 KB
CLOSE_WAIT_SECONDS = 2.0  # after the last PDU we send, how long the peer may take to close its side
LAST_COMMAND_FRAGMENT = 0x03
_serial = itertools.count(1)


@dataclass(frozen=True)
class Peer:
    """Who is on the other side of an association (AE titles stripped)."""

    calling_ae_title: str
    called_ae_title: str
    host: str
    association_id: str


@dataclass(frozen=True)
class Rejection:
    """Why an association request is refused, and the A-ASSOCIATE-RJ (result, source, diagnostic)."""

    reason: str
    result: int
    source: int
    diagnostic: int


@dataclass(frozen=True)
class Limits:
    """The acceptor's negotiated and timing limits (from ``node`` settings)."""

    max_pdu_length: int
    acse_timeout: float  # from the connection to the whole A-ASSOCIATE-RQ
    network_timeout: float  # between messages
    dimse_timeout: float  # between the PDUs of a message in progress
    pdu_timeout: float = 0.0  # from a PDU's first byte to its last (0: no deadline)


class PeerSilent(TimeoutError):
    """No PDU arrived in time; the message names the setting that allowed the wait."""


class AssociationHandler(Protocol):
    """What the node decides; the engine only moves PDUs. Implementations never raise."""

    def on_request(self, peer: Peer) -> Rejection | None:
        """Accept (None) or refuse an association; an accepted one is always followed by on_end."""

    def on_store(self, peer: Peer, context: acse.AcceptedContext, command: Command, data_set: bytearray | None) -> int:
        """Store one C-STORE request's encoded dataset; return the DIMSE status."""

    def on_end(self, peer: Peer, outcome: str) -> None:
        """An accepted association ended: ``outcome`` is "released" or "aborted"."""


def _nothing() -> None:
    return None


def run_association(
    sock: socket.socket,
    host: str,
    admitted: Callable[[], None] = _nothing,
    *,
    handler: AssociationHandler,
    negotiator: acse.Negotiator,
    limits: Limits,
) -> None:
    """Serve one connection until it is released, aborted, times out or closes; always closes ``sock``.

    ``admitted`` is called once the association is accepted: the connection is no longer pending.
    """
    try:
        _serve(sock, host, handler, negotiator, limits, admitted)
    except Exception:  # a defect here must not take the receiving process down
        log.exception("association from %s failed; closing the connection", host)
    finally:
        sock.close()


def _serve(sock: socket.socket, host: str, handler: AssociationHandler, negotiator: acse.Negotiator,
           limits: Limits, admitted: Callable[[], None]) -> None:
    sock.settimeout(limits.acse_timeout)
    reader = pdu.PduReader(sock, ASSOCIATE_RQ_LIMIT)
    try:
        pdu_type, body = reader.read(deadline=time.monotonic() + limits.acse_timeout)
        if pdu_type != pdu.A_ASSOCIATE_RQ:
            raise pdu.ProtocolError(f"PDU type 0x{pdu_type:02X} before A-ASSOCIATE-RQ", pdu.ABORT_UNEXPECTED_PDU)
        request = negotiator.decode(body)
    except pdu.ProtocolError as exc:
        log.warning("aborting connection from %s: %s", host, exc)
        _send_last(sock, pdu.abort(exc.reason))
        return
    except (TimeoutError, ConnectionError, OSError) as exc:
        log.warning("connection from %s closed before association: %s", host,
                    _describe(exc, limits.acse_timeout, "node.acse_timeout", "A-ASSOCIATE-RQ"))
        return
    association_id = f"{os.getpid()}-{next(_serial)}-{time.time_ns()}"
    peer = Peer(request.calling_ae_title, request.called_ae_title, host, association_id)
    rejection = handler.on_request(peer)
    if rejection is not None:
        _send_last(sock, acse.reject(rejection.result, rejection.source, rejection.diagnostic))
        return
    outcome = "aborted"
    try:
        accept_pdu, negotiated = negotiator.accept(request)
        sock.sendall(accept_pdu)
        admitted()
        reader.max_length, reader.pdu_seconds = limits.max_pdu_length, limits.pdu_timeout
        outcome = _exchange(sock, reader, peer, handler, negotiated.accepted, negotiated.peer_max_pdu_length, limits)
    except pdu.ProtocolError as exc:
        log.warning("aborting association from %s@%s: %s", peer.calling_ae_title, host, exc)
        _send_last(sock, pdu.abort(exc.reason))
    except PeerSilent as exc:
        log.warning("aborting association from %s@%s: %s", peer.calling_ae_title, host, exc)
        _send_last(sock, pdu.abort())
    except (ConnectionError, OSError) as exc:
        log.warning("association from %s@%s ended without release: %s", peer.calling_ae_title, host,
                    _describe(exc, limits.network_timeout, "node.network_timeout"))
    finally:
        handler.on_end(peer, outcome)


def _exchange(sock: socket.socket, reader: pdu.PduReader, peer: Peer, handler: AssociationHandler,
              accepted: dict[int, acse.AcceptedContext], peer_max_pdu: int, limits: Limits) -> str:
    """Answer requests until A-RELEASE-RQ ("released") or A-ABORT ("aborted")."""
    assembler = MessageAssembler(set(accepted))
    timeout = None
    while True:
        waiting_inside_message = assembler.in_progress
        if timeout != (wanted := limits.dimse_timeout if waiting_inside_message else limits.network_timeout):
            sock.settimeout(wanted)  # only on a change: each call is a system call (FIONBIO)
            timeout = wanted
        try:
            pdu_type, body = reader.read()
        except pdu.PduTooSlow as exc:
            raise PeerSilent(f"a PDU {exc} after {limits.pdu_timeout:g} s (node.pdu_timeout)") from exc
        except TimeoutError as exc:
            if waiting_inside_message:
                raise PeerSilent(f"message incomplete after {limits.dimse_timeout:g} s (node.dimse_timeout)") from exc
            raise PeerSilent(f"no PDU for {limits.network_timeout:g} s (node.network_timeout)") from exc
        if pdu_type == pdu.P_DATA_TF:
            for message in assembler.feed(body):
                response = _answer(peer, handler, accepted[message.context_id], message)
                if response is not None:
                    sock.sendall(pdu.p_data(message.context_id, LAST_COMMAND_FRAGMENT, response, peer_max_pdu))
        elif pdu_type == pdu.A_RELEASE_RQ:
            if assembler.in_progress:
                log.warning("association from %s@%s released in the middle of a message; it is discarded",
                            peer.calling_ae_title, peer.host)
            _send_last(sock, pdu.release_rp())
            return "released"
        elif pdu_type == pdu.A_ABORT:
            log.info("association from %s@%s aborted by the peer", peer.calling_ae_title, peer.host)
            return "aborted"
        else:
            raise pdu.ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} on an established association",
                                    pdu.ABORT_UNEXPECTED_PDU)


def _answer(peer: Peer, handler: AssociationHandler, context: acse.AcceptedContext, message: Message) -> bytes | None:
    """The response command set to one request, or None when none is due."""
    command = message.command
    if command.command_field == C_STORE_RQ:
        try:
            status = handler.on_store(peer, context, command, message.data_set)
        except Exception:  # handlers map failures to statuses; this is the last resort
            log.exception("C-STORE of %s from %s failed", command.affected_sop_instance_uid, peer.calling_ae_title)
            status = Status.PROCESSING_FAILURE
        return encode_response(command, status)
    if command.command_field == C_ECHO_RQ:
        return encode_response(command, Status.SUCCESS)
    if command.command_field == C_CANCEL_RQ or command.command_field & RESPONSE_BIT:
        return None  # nothing of ours to cancel; responses are not expected from the requestor
    log.warning("DIMSE command 0x%04X from %s@%s is not supported: answered Unrecognized Operation",
                command.command_field, peer.calling_ae_title, peer.host)
    return encode_response(command, Status.UNRECOGNIZED_OPERATION)


def _send_last(sock: socket.socket, data: bytes) -> None:
    """Send the final PDU, then let the peer close first (so it reads the PDU) or give up after a while."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(CLOSE_WAIT_SECONDS)
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _describe(exc: BaseException, timeout: float, setting: str, what: str = "") -> str:
    if isinstance(exc, pdu.PduTooSlow):
        return f"{what or 'PDU'} {exc} after {timeout:g} s ({setting})"
    if isinstance(exc, TimeoutError):
        return f"nothing received for {timeout:g} s ({setting})"
    if isinstance(exc, pdu.PeerClosed):
        return "the peer closed the connection"
    return f"{type(exc).__name__}: {exc}"
