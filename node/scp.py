"""The DICOM SCP: pynetdicom application entity, association gate and port-sharing server.

C-ECHO and C-STORE for every storage SOP class in the uncompressed, deflated, RLE, JPEG, JPEG-LS and
JPEG 2000 transfer syntaxes. Several receiving processes can share the port (SO_REUSEPORT); the
association limit is counted across all of them in shared memory.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom import uid
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from node import audit
from node.config import Settings
from node.db import Database
from node.receive_handler import StoreHandler
from node.receive_tuning import dul_delay_handler

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
    _counted: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        return [(evt.EVT_REQUESTED, self.on_requested), (evt.EVT_CONN_CLOSE, self.on_closed)]

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        called = str(assoc.requestor.primitive.called_ae_title).strip()
        host = assoc.requestor.address
        reason, rejection = self._refusal(calling, host)
        if reason is None:
            open_total = self.counter.try_acquire(self.settings.node.max_associations)
            if open_total is not None:
                reason = f"{open_total} associations already open (node.max_associations)"
                rejection = REJECT_TOO_MANY
            else:
                with self._lock:
                    self._counted.add(id(assoc))
        if reason is None:
            log.debug("association from %s@%s to %s accepted", calling, host, called)
            return
        log.warning("rejected association from %s@%s to %s: %s", calling, host, called, reason)
        if self.database is not None:
            try:
                audit.association_rejected(
                    self.database, calling_ae_title=calling[:16], calling_host=host, called_ae_title=called[:16], reason=reason
                )
            except Exception:  # the refusal must still be sent
                log.exception("cannot audit the refused association from %s@%s", calling, host)
        assoc.acse.send_reject(*rejection)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

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

    def on_closed(self, event: evt.Event) -> None:
        with self._lock:
            if id(event.assoc) not in self._counted:
                return
            self._counted.discard(id(event.assoc))
        self.counter.release()


class ReusePortServer(ThreadedAssociationServer):
    """An association server whose listening socket can be shared by several processes."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            # Responses are small writes; Nagle's algorithm would hold them back waiting for ACKs.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    def shutdown(self) -> None:
        # The server was not started through AE.start_server, so it is not in the AE's list.
        socketserver.TCPServer.shutdown(self)  # AssociationServer.shutdown would look for us in the AE's list
        self.server_close()


def build_ae(settings: Settings) -> AE:
    """The node's application entity with its timeouts, PDU size and contexts."""
    node = settings.node
    ae = AE(ae_title=node.ae_title)
    ae.supported_contexts = supported_contexts()
    ae.maximum_pdu_size = node.pdu_max_length
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    # The gate enforces the limit across processes; pynetdicom's own check must not interfere first.
    ae.maximum_associations = node.max_associations + 1
    return ae


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
    """One receiving server (thread-based) bound to the node's address."""

    settings: Settings
    database: Database
    counter: AssociationCounter
    extra_checks: list[Callable[[], str | None]] = field(default_factory=list)
    server: ReusePortServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve in a background thread; return the bound address."""
        ae = build_ae(self.settings)
        gate = AssociationGate(self.settings, self.counter, self.extra_checks, database=self.database)
        store = StoreHandler(self.settings.node.storage_dir, self.database)
        handlers = gate.handlers() + [
            dul_delay_handler(self.settings.node.reactor_poll_seconds),
            (evt.EVT_C_STORE, store),
            (evt.EVT_RELEASED, store.on_association_end),
            (evt.EVT_ABORTED, store.on_association_end),
        ]
        self.server = ae.make_server(
            (self.settings.node.host, self.settings.node.port),
            ssl_context=tls_context(self.settings),
            evt_handlers=handlers,
            server_class=ReusePortServer,
        )
        self._thread = threading.Thread(target=self.server.serve_forever, name="pacsnode-scp", daemon=True)
        self._thread.start()
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        """Stop accepting, then wait for the associations in progress to finish (bounded)."""
        if self.server is None:
            return
        self.server.shutdown()
        for assoc in list(self.server.active_associations):
            assoc.join(timeout=self.settings.node.network_timeout)
        self.server = None
