"""Who holds the node's open associations, in shared memory across every receiving process.

Each open association holds one slot: the peer's address, its calling AE title (both as 63-bit keys) and
whether it is a configured sender. The association limits (in all, per address, per calling AE title, and the
slots kept for configured senders) are decided on the sums over all slots under one lock, so they hold however
many processes share the port. Each process owns one row of slots, so `serve` can free the row of a process
that died with associations open.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FIELDS = 3  # per slot: address key, calling AE title key, configured sender (1 or 0); a free slot has key 0


@dataclass(frozen=True)
class Occupancy:
    """The open associations an admission is judged against."""

    total: int
    from_host: int  # held by callers that are not configured senders, from the same address
    with_ae_title: int  # held with the same calling AE title


def peer_key(kind: str, value: str) -> int:
    """A stable positive 63-bit key for an address or AE title (0 marks a free slot)."""
    digest = hashlib.blake2b(f"{kind}\0{value}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def shared_table(processes: int, per_process: int, context: Any | None = None) -> Any:
    """The shared slot table for ``processes`` receiving processes of up to ``per_process`` associations each."""
    context = context or mp.get_context("spawn")
    return context.Array("q", processes * per_process * FIELDS)


class AssociationCounter:
    """This process's view of the shared slot table: take a slot when a decision allows it, give it back."""

    def __init__(self, table: Any | None = None, index: int = 0, per_process: int | None = None) -> None:
        """``table`` from :func:`shared_table` (None: a private table for one process of 1024 slots);
        ``index`` is this process's row."""
        self.table = table if table is not None else shared_table(1, 1024)
        rows = len(self.table) // FIELDS
        self.per_process = per_process or rows
        self.index = index
        self._row = range(index * self.per_process, (index + 1) * self.per_process)

    def try_acquire(self, host: str, ae_title: str, configured: bool,
                    refusal: Callable[[Occupancy], str | None]) -> tuple[int | None, str | None]:
        """Take a slot for an association from ``host`` as ``ae_title`` unless ``refusal(occupancy)`` names a
        reason; returns (slot, None) or (None, reason)."""
        host_key, ae_key = peer_key("host", host), peer_key("ae", ae_title)
        table = self.table
        with table.get_lock():
            values = table.get_obj()
            total = from_host = with_ae = 0
            for base in range(0, len(values), FIELDS):
                if values[base]:
                    total += 1
                    from_host += values[base] == host_key and not values[base + 2]
                    with_ae += values[base + 1] == ae_key
            reason = refusal(Occupancy(total, from_host, with_ae))
            if reason is not None:
                return None, reason
            for slot in self._row:
                base = slot * FIELDS
                if not values[base]:
                    values[base], values[base + 1], values[base + 2] = host_key, ae_key, int(configured)
                    return slot, None
        return None, f"this receiving process already holds {self.per_process} associations (node.max_associations)"

    def release(self, slot: int) -> None:
        with self.table.get_lock():
            self.table.get_obj()[slot * FIELDS] = 0

    def reset(self) -> None:
        """Free this process's slots (it died with them)."""
        with self.table.get_lock():
            values = self.table.get_obj()
            for slot in self._row:
                values[slot * FIELDS] = 0

    def open_total(self) -> int:
        with self.table.get_lock():
            values = self.table.get_obj()
            return sum(1 for base in range(0, len(values), FIELDS) if values[base])


LocalCounter = AssociationCounter  # AssociationCounter() alone counts for a single process
