"""Who may associate: the calling AE allowlist, host binding, extra checks (the disk guard) and the association
limit, counted across every receiving process in shared memory.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.config import Settings
from node.db import Database
from node.dicom.upper_layer.association import Peer, Rejection
from node.operate import audit

log = logging.getLogger(__name__)

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
