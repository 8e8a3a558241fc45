"""The DICOM SCP: supported contexts, the association gate and the receiving server.

C-ECHO and C-STORE for every storage SOP class in the uncompressed, deflated, RLE, JPEG, JPEG-LS and
JPEG 2000 transfer syntaxes, served by pacsnode's upper layer (node.dicom.upper_layer). Several receiving
processes can share the port (SO_REUSEPORT); the association limit is counted across all of them in
shared memory.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom import uid
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.operate import audit
from node.config import Settings
from node.db import Database
from node.receive.handler import StoreHandler, StoreRequest
from node.dicom.upper_layer.acse import AcceptedContext, Negotiator
from node.dicom.upper_layer.association import Limits, Peer, Rejection, run_association
from node.dicom.upper_layer.dimse import Command
from node.dicom.upper_layer.server import AssociationServer

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES: list[str] = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
]

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
REJECT_TOO_MANY = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded
REJECT_CONGESTION = (0x02, 0x03, 0x01)  # transient, service provider (presentation), temporary congestion


class AssociationCounter:
    """Open associations of each receiving process in shared memory; the limit applies to their sum.

    One slot per process, so a process that dies can have its slot reset by `serve`.
    """

    def __init__(self, slots: Any | None = None, index: int = 0) -> None:
        self.slots = slots if slots is not None else mp.get_context("spawn").Array("i", 1)
        self.index = index

    def try_acquire(self, limit: int) -> int | None:
        """Count one more association unless ``limit`` are open; return the open total when refused."""
        with self.slots.get_lock():
            total = sum(self.slots)
            if total >= limit:
                return total
            self.slots[self.index] += 1
            return None

    def release(self) -> None:
        with self.slots.get_lock():
            self.slots[self.index] = max(0, self.slots[self.index] - 1)

    def reset(self) -> None:
        """Forget this slot's associations (its process died with them)."""
        with self.slots.get_lock():
            self.slots[self.index] = 0


LocalCounter = AssociationCounter  # AssociationCounter() alone counts for a single process


def supported_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class, each with all accepted transfer syntaxes."""
    contexts = [build_context(Verification)]
    contexts += [build_context(cx.abstract_syntax, TRANSFER_SYNTAXES) for cx in AllStoragePresentationContexts]
    return contexts


@dataclass
class AssociationGate:
    """Accepts or rejects association requests: allowlist, host binding, global association limit.

    ``extra_checks`` are callables returning a refusal reason (or None); a refusal from one of them is
    answered as temporary congestion (e.g. the disk guard).
    """

    settings: Settings
    counter: AssociationCounter
    extra_checks: list[Callable[[], str | None]] = field(default_factory=list)
    database: Database | None = None  # where refusals are audited
    _counted: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, peer: Peer) -> Rejection | None:
        """None when ``peer`` may associate (it is then counted until :meth:`release`), else the refusal."""
        calling, host, called = peer.calling_ae_title, peer.host, peer.called_ae_title
        reason, rejection = self._refusal(calling, host)
        if reason is None:
            open_total = self.counter.try_acquire(self.settings.node.max_associations)
            if open_total is not None:
                reason = f"{open_total} associations already open (node.max_associations)"
                rejection = REJECT_TOO_MANY
            else:
                with self._lock:
                    self._counted.add(peer.association_id)
        if reason is None:
            log.debug("association from %s@%s to %s accepted", calling, host, called)
            return None
        log.warning("rejected association from %s@%s to %s: %s", calling, host, called, reason)
        if self.database is not None:
            try:
                audit.association_rejected(
                    self.database, calling_ae_title=calling[:16], calling_host=host, called_ae_title=called[:16], reason=reason
                )
            except Exception:  # the refusal must still be sent
                log.exception("cannot audit the refused association from %s@%s", calling, host)
        return Rejection(reason, *rejection)

    def _refusal(self, calling: str, host: str) -> tuple[str | None, tuple[int, int, int]]:
        node = self.settings.node
        if node.allowed_calling_ae_titles and calling not in node.allowed_calling_ae_titles:
            return "calling AE title not in node.allowed_calling_ae_titles", REJECT_CALLING_AE
        bound_host = node.calling_ae_hosts.get(calling)
        if bound_host is not None and bound_host != host:
            return f"calling AE title is bound to {bound_host} (node.calling_ae_hosts)", REJECT_CALLING_AE
        for check in self.extra_checks:
            reason = check()
            if reason:
                return reason, REJECT_CONGESTION
        return None, REJECT_CONGESTION

    def release(self, association_id: str) -> None:
        """An admitted association ended: it no longer counts towards the limit."""
        with self._lock:
            if association_id not in self._counted:
                return
            self._counted.discard(association_id)
        self.counter.release()


@dataclass
class NodeAssociations:
    """The node's decisions for the upper layer: who may associate, and how C-STORE requests are stored."""

    gate: AssociationGate
    store: StoreHandler

    def on_request(self, peer: Peer) -> Rejection | None:
        return self.gate.admit(peer)

    def on_store(self, peer: Peer, context: AcceptedContext, command: Command, data_set: bytearray | None) -> int:
        request = StoreRequest(
            stream=data_set,
            transfer_syntax=context.transfer_syntax,
            context_sop_class_uid=context.abstract_syntax,
            command_sop_class_uid=command.affected_sop_class_uid,
            command_sop_instance_uid=command.affected_sop_instance_uid,
            calling_ae_title=peer.calling_ae_title,
            called_ae_title=peer.called_ae_title,
            calling_host=peer.host,
            association_id=peer.association_id,
        )
        return int(self.store.store(request))

    def on_end(self, peer: Peer, outcome: str) -> None:
        try:
            self.store.on_association_end(peer.association_id, peer.calling_ae_title, peer.called_ae_title,
                                          peer.host, outcome)
        finally:
            self.gate.release(peer.association_id)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server TLS context from ``node.tls``, or None when TLS is off."""
    tls = settings.node.tls
    if not tls.enabled:
        return None
    if tls.certificate is None or tls.private_key is None:
        raise ValueError("node.tls.enabled needs node.tls.certificate and node.tls.private_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.ca_certificates is not None:
        context.load_verify_locations(str(tls.ca_certificates))
    if tls.require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class Receiver:
    """One receiving server (a thread per association) bound to the node's address."""

    settings: Settings
    database: Database
    counter: AssociationCounter
    extra_checks: list[Callable[[], str | None]] = field(default_factory=list)
    server: AssociationServer | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve in background threads; return the bound address."""
        node = self.settings.node
        gate = AssociationGate(self.settings, self.counter, self.extra_checks, database=self.database)
        handler = NodeAssociations(gate, StoreHandler(node.storage_dir, self.database))
        limits = Limits(max_pdu_length=node.pdu_max_length, acse_timeout=node.acse_timeout,
                        network_timeout=node.network_timeout, dimse_timeout=node.dimse_timeout)
        negotiator = Negotiator(supported_contexts(), node.pdu_max_length)
        serve = partial(run_association, handler=handler, negotiator=negotiator, limits=limits)
        self.server = AssociationServer((node.host, node.port), serve, tls=tls_context(self.settings),
                                        handshake_timeout=node.acse_timeout)
        self.server.start()
        return self.server.address

    def stop(self) -> None:
        """Stop accepting, then wait for the associations in progress to finish (bounded)."""
        if self.server is None:
            return
        self.server.stop(timeout=self.settings.node.network_timeout)
        self.server = None
