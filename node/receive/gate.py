"""Who may associate: the calling AE allowlist, host binding, extra checks (the disk guard) and the association
limits (in all, per peer address, per calling AE title, with slots kept for configured senders), counted
across every receiving process in shared memory (``node.receive.slots``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from node.config import Settings
from node.db import Database
from node.dicom.upper_layer.association import Peer, Rejection
from node.operate import audit
from node.receive.slots import AssociationCounter, Occupancy

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
REJECT_TOO_MANY = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded
REJECT_CONGESTION = (0x02, 0x03, 0x01)  # transient, service provider (presentation), temporary congestion


def configured_sender(settings: Settings, calling: str, host: str) -> bool:
    """True for a calling AE title the configuration names (allowlist, host binding, ``senders``), from its
    configured address where one is given."""
    node = settings.node
    if calling in node.allowed_calling_ae_titles or calling in node.calling_ae_hosts:
        return True
    sender = settings.sender(calling)
    return sender is not None and sender.host in ("", host)


def any_configured_sender(settings: Settings) -> bool:
    node = settings.node
    return bool(node.allowed_calling_ae_titles or node.calling_ae_hosts or settings.senders)


@dataclass
class AssociationGate:
    """Accepts or rejects association requests: allowlist, host binding, extra checks, association limits.

    ``extra_checks`` are callables returning a refusal reason (or None); a refusal from one of them is
    answered as temporary congestion (e.g. the disk guard). Callers the configuration does not name are held
    to ``node.max_associations_per_host`` per address and may not take the last ``node.reserved_associations``
    slots; every caller to ``node.max_associations_per_ae_title`` per calling AE title.
    """

    settings: Settings
    counter: AssociationCounter
    extra_checks: list[Callable[[], str | None]] = field(default_factory=list)
    database: Database | None = None  # where refusals are audited
    _slots: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, peer: Peer) -> Rejection | None:
        """None when ``peer`` may associate (it then holds a slot until :meth:`release`), else the refusal."""
        calling, host, called = peer.calling_ae_title, peer.host, peer.called_ae_title
        reason, rejection = self._refusal(calling, host)
        if reason is None:
            configured = configured_sender(self.settings, calling, host)
            slot, reason = self.counter.try_acquire(host, calling, configured,
                                                    lambda occupancy: self._over_limit(occupancy, configured))
            if slot is None:
                rejection = REJECT_TOO_MANY
            else:
                with self._lock:
                    self._slots[peer.association_id] = slot
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

    def _over_limit(self, occupancy: Occupancy, configured: bool) -> str | None:
        """Which association limit a new association would exceed, or None."""
        node = self.settings.node
        if occupancy.total >= node.max_associations:
            return f"{occupancy.total} associations already open (node.max_associations)"
        if occupancy.with_ae_title >= node.max_associations_per_ae_title:
            return (f"{occupancy.with_ae_title} associations with this calling AE title already open "
                    "(node.max_associations_per_ae_title)")
        if configured:
            return None
        if occupancy.from_host >= node.max_associations_per_host:
            return f"{occupancy.from_host} associations from this address already open (node.max_associations_per_host)"
        others_limit = max(1, node.max_associations - node.reserved_associations)
        if occupancy.total >= others_limit and any_configured_sender(self.settings):
            return (f"{occupancy.total} associations open; the other {node.max_associations - others_limit} are kept "
                    "for configured senders (node.reserved_associations)")
        return None

    def release(self, association_id: str) -> None:
        """An admitted association ended: its slot is free again."""
        with self._lock:
            slot = self._slots.pop(association_id, None)
        if slot is not None:
            self.counter.release(slot)
