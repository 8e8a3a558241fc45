"""The DICOM SCP of one receiving process: the upper layer (node.dicom.upper_layer) serving C-ECHO and C-STORE,
with the association gate deciding who may associate and the store handler storing each instance.

Several receiving processes share the port (SO_REUSEPORT); see ``node.receive.processes``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from node.config import Settings
from node.db import Database
from node.dicom.contexts import supported_contexts
from node.dicom.upper_layer.acse import AcceptedContext, Negotiator
from node.dicom.upper_layer.association import Limits, Peer, Rejection, run_association
from node.dicom.upper_layer.dimse import Command
from node.dicom.upper_layer.server import AssociationServer, PendingConnections
from node.receive.gate import AssociationGate
from node.receive.slots import AssociationCounter
from node.receive.handler import StoreHandler, StoreRequest

log = logging.getLogger(__name__)


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
    space_check: Callable[[int], str | None] | None = None  # the disk guard, before each instance is written
    server: AssociationServer | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve in background threads; return the bound address."""
        node = self.settings.node
        gate = AssociationGate(self.settings, self.counter, self.extra_checks, database=self.database)
        handler = NodeAssociations(gate, StoreHandler(node.storage_dir, self.database, self.space_check,
                                                      duplicates=node.duplicate_instances))
        limits = Limits(max_pdu_length=node.pdu_max_length, acse_timeout=node.acse_timeout,
                        network_timeout=node.network_timeout, dimse_timeout=node.dimse_timeout,
                        pdu_timeout=node.pdu_timeout)
        negotiator = Negotiator(supported_contexts(), node.pdu_max_length)
        serve = partial(run_association, handler=handler, negotiator=negotiator, limits=limits)
        self.server = AssociationServer((node.host, node.port), serve, tls=tls_context(self.settings),
                                        handshake_timeout=node.acse_timeout,
                                        pending=PendingConnections(node.max_pending_connections,
                                                                   node.max_pending_per_host))
        self.server.start()
        return self.server.address

    def stop(self) -> None:
        """Stop accepting, then wait for the associations in progress to finish (bounded)."""
        if self.server is None:
            return
        self.server.stop(timeout=self.settings.node.network_timeout)
        self.server = None
