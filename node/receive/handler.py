"""The C-STORE logic: validate, store durably, index, and only then answer Success.

It takes plain values (the encoded dataset, its transfer syntax, the command's UIDs, who sent it), not
a network event, and never raises: every failure maps to a specific DICOM status and a log line that
names the problem (UIDs, AE titles and sizes only, never patient data).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.operate import audit
from node.db import Database, record_event
from node.dicom.status import Status
from node.receive.instances import KnownSeries, Received, close_association_evidence, record_instance
from node.receive.resend import Resend, ResentCounts, decide, record_resent
from node.receive.commit import GroupCommit, NotDurable
from node.receive.dataset import Identifiers, UnreadableDataset, file_meta_header, read_identifiers
from node.receive.storage import InvalidUID, StorageFull, instance_path, write_durably
from node.receive.structure import IncompleteDataset, check_complete

log = logging.getLogger(__name__)


class Refused(Exception):
    """An instance is refused: the status to answer, the reason to log and record, the instance's UID if known."""

    def __init__(self, status: Status, message: str, uid: str | None, *, record: bool = True) -> None:
        super().__init__(message)
        self.status, self.uid, self.record = status, uid, record


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE request as received: the encoded dataset and what the association and command say."""

    stream: bytes | bytearray | None  # the encoded dataset (None: the request carried none)
    transfer_syntax: str  # of the presentation context
    context_sop_class_uid: str  # the presentation context's abstract syntax
    command_sop_class_uid: str  # Affected SOP Class UID of the command
    command_sop_instance_uid: str  # Affected SOP Instance UID of the command
    calling_ae_title: str
    called_ae_title: str  # the AE title the sender called (routes may depend on it)
    calling_host: str
    association_id: str  # groups the requests of one association (summary line, audit trail)


@dataclass
class AssociationStats:
    """Per-association counters for the summary log line."""

    stored: int = 0
    failed: int = 0
    bytes: int = 0
    received: list[tuple[str, str, str, int]] = field(default_factory=list)  # for the audit trail
    series: set[str] = field(default_factory=set)  # series linked to the association in the index
    resent: dict[str, ResentCounts] = field(default_factory=dict)  # series UID -> instances sent again


@dataclass
class StoreHandler:
    """The store logic of one receiving process; safe to call from one thread per association.

    ``space_check(size)`` (optional) says why an instance of ``size`` bytes may not be written now (the disk
    guard), checked before each write so associations in progress are held to it too. ``duplicates`` is the
    policy for an instance already stored (``node.receive.resend``).
    """

    storage_dir: Path
    database: Database
    space_check: Callable[[int], str | None] | None = None
    duplicates: str = "keep"
    stats: dict[str, AssociationStats] = field(default_factory=dict)
    known: KnownSeries = field(default_factory=KnownSeries)
    commits: GroupCommit = field(init=False)

    def __post_init__(self) -> None:
        self.commits = GroupCommit(self._index_group, self._index)

    def store(self, request: StoreRequest) -> Status:
        """Store one instance durably and index it; the status to answer."""
        status = self._store(request)
        counters = self.stats.setdefault(request.association_id, AssociationStats())
        if status == Status.SUCCESS:
            counters.stored += 1
        else:
            counters.failed += 1
        return status

    def on_association_end(self, association_id: str, calling_ae_title: str, called_ae_title: str,
                           calling_host: str, outcome: str) -> None:
        """Record how the association ended (``outcome``: released or aborted) as evidence for the completion of
        the series it carried, log one summary line and audit what it stored."""
        counters = self.stats.pop(association_id, None)
        if counters is None:
            return
        if counters.series:
            close_association_evidence(self.database, association_id, outcome)
        log.info(
            "association from %s@%s %s: %d stored (%.1f MB), %d failed",
            calling_ae_title,
            calling_host,
            outcome,
            counters.stored,
            counters.bytes / 1e6,
            counters.failed,
        )
        if counters.resent:
            record_resent(self.database, self.duplicates, calling_ae_title, calling_host, counters.resent)
        if counters.received:
            audit.association_ended(
                self.database,
                calling_ae_title=calling_ae_title,
                calling_host=calling_host,
                called_ae_title=called_ae_title,
                association_id=association_id,
                received=counters.received,
            )

    def _store(self, request: StoreRequest) -> Status:
        try:
            ids = self._identify(request)
            path = instance_path(self.storage_dir, ids.study_uid, ids.series_uid, ids.sop_instance_uid)
            resend = self._resend(request, ids, path)
            if resend is not None and resend.action == "keep":
                size = path.stat().st_size  # the stored copy stays; it is indexed (again, harmlessly) all the same
            else:
                size = self._write(request, ids, path)
            new = self._commit(request, ids, path, size, replaced=resend is not None and resend.reopen)
        except Refused as refusal:
            return self._fail(refusal.status, str(refusal), request.calling_ae_title, refusal.uid,
                              record=refusal.record)
        counters = self.stats.setdefault(request.association_id, AssociationStats())
        counters.bytes += size
        counters.received.append((ids.study_uid, ids.series_uid, ids.sop_instance_uid, size))
        counters.series.add(ids.series_uid)
        log.debug("stored %s (%s, series %s, %d bytes, from %s)%s", ids.sop_instance_uid, ids.modality,
                  ids.series_uid, size, request.calling_ae_title, "" if new else " again")
        return Status.SUCCESS

    @staticmethod
    def _identify(request: StoreRequest) -> Identifiers:
        """The instance's identifiers, checked against what the association and the command say."""
        if request.stream is None:
            raise Refused(Status.CANNOT_PARSE, "C-STORE request without a data set", None)
        try:
            ids = read_identifiers(request.stream, request.transfer_syntax)
        except InvalidUID as exc:
            raise Refused(Status.INVALID_UID, f"rejected instance: {exc}", request.command_sop_instance_uid) from exc
        except UnreadableDataset as exc:
            raise Refused(Status.CANNOT_PARSE, f"rejected instance: {exc}", request.command_sop_instance_uid) from exc
        if ids.sop_class_uid != request.context_sop_class_uid or ids.sop_class_uid != request.command_sop_class_uid:
            raise Refused(
                Status.SOP_CLASS_MISMATCH,
                f"rejected instance {ids.sop_instance_uid}: dataset SOP Class {ids.sop_class_uid} does not match "
                f"the presentation context's {request.context_sop_class_uid}",
                ids.sop_instance_uid,
            )
        if ids.sop_instance_uid != request.command_sop_instance_uid:
            raise Refused(
                Status.SOP_INSTANCE_MISMATCH,
                f"rejected instance {ids.sop_instance_uid}: the C-STORE command names "
                f"{request.command_sop_instance_uid}",
                ids.sop_instance_uid,
            )
        try:
            check_complete(request.stream, request.transfer_syntax)
        except IncompleteDataset as exc:
            raise Refused(Status.CANNOT_PARSE, f"rejected instance {ids.sop_instance_uid}: the data set is not "
                          f"whole: {exc}", ids.sop_instance_uid) from exc
        return ids

    def _resend(self, request: StoreRequest, ids: Identifiers, path: Path) -> Resend | None:
        """The policy's decision for an instance already stored (None when it is new); counted, or refused."""
        assert request.stream is not None
        resend = decide(self.duplicates, path, request.stream)
        if resend is None:
            return None
        counters = self.stats.setdefault(request.association_id, AssociationStats())
        counts = counters.resent.setdefault(ids.series_uid, ResentCounts())
        counts.count += 1
        counts.identical += resend.identical
        if resend.action == "refuse":
            raise Refused(Status.DUPLICATE_SOP_INSTANCE, f"refused {ids.sop_instance_uid}: already stored "
                          "(node.duplicate_instances: refuse)", ids.sop_instance_uid, record=False)
        return resend

    def _write(self, request: StoreRequest, ids: Identifiers, path: Path) -> int:
        """The instance's file, fsynced and renamed into place (its folder is synced by the group commit)."""
        header = file_meta_header(ids.sop_class_uid, ids.sop_instance_uid, request.transfer_syntax,
                                  request.calling_ae_title)
        assert request.stream is not None
        if self.space_check is not None:
            shortage = self.space_check(len(header) + len(request.stream))
            if shortage:
                raise Refused(Status.OUT_OF_RESOURCES, f"refused {ids.sop_instance_uid}: {shortage}",
                              ids.sop_instance_uid, record=False)
        try:
            return write_durably(path, (header, request.stream), sync_directory=False)
        except StorageFull as exc:
            raise Refused(Status.OUT_OF_RESOURCES, f"out of disk space storing {ids.sop_instance_uid}: "
                          f"{exc.strerror}; free space under {self.storage_dir}", ids.sop_instance_uid) from exc
        except OSError as exc:
            raise Refused(Status.STORAGE_FAILED, f"cannot store {ids.sop_instance_uid} at {path}: {exc}",
                          ids.sop_instance_uid) from exc

    def _commit(self, request: StoreRequest, ids: Identifiers, path: Path, size: int, *, replaced: bool) -> bool:
        """Make the file's rename durable and index it (group commit); True when the instance is new.
        ``replaced``: it replaced a stored copy, whose series is reopened."""
        received = Received(
            ids=ids,
            transfer_syntax_uid=request.transfer_syntax,
            path=str(path),
            size_bytes=size,
            calling_ae_title=request.calling_ae_title,
            called_ae_title=request.called_ae_title,
            calling_host=request.calling_host,
            association_id=request.association_id,
            first_in_association=ids.series_uid not in self._linked(request.association_id),
            replaced=replaced,
        )
        try:
            return self.commits.commit(received)
        except NotDurable as exc:
            raise Refused(Status.STORAGE_FAILED, f"cannot store {ids.sop_instance_uid} durably: {exc}",
                          ids.sop_instance_uid) from exc
        except Exception as exc:  # the database may be down; the peer must retry
            raise Refused(Status.INDEX_FAILED, f"stored {ids.sop_instance_uid} but cannot index it: "
                          f"{type(exc).__name__}: {exc}", ids.sop_instance_uid, record=False) from exc

    def _linked(self, association_id: str) -> set[str]:
        """The series an association has already stored instances of (and linked to itself in the index)."""
        counters = self.stats.get(association_id)
        return counters.series if counters is not None else set()

    def _index_group(self, group: list[Received]) -> list[bool]:
        """Index several instances in one transaction (see GroupCommit)."""
        with self.database.engine.begin() as connection:
            new = [record_instance(connection, received, self.known) for received in group]
        for received in {received.ids.series_uid: received for received in group}.values():
            self._remember_series(received)
        return new

    def _index(self, received: Received) -> bool:
        series_uid = received.ids.series_uid
        try:
            with self.database.engine.begin() as connection:
                new = record_instance(connection, received, self.known)
        except Exception:
            if series_uid not in self.known:
                raise
            # The series row may have been removed meanwhile (retention): upsert it this time.
            self.known.discard(series_uid)
            with self.database.engine.begin() as connection:
                new = record_instance(connection, received, self.known)
        self._remember_series(received)
        return new

    def _remember_series(self, received: Received) -> None:
        """Log a series' first instance in this process; later ones skip the study and series upserts."""
        series_uid = received.ids.series_uid
        if series_uid not in self.known:
            log.info("receiving series %s (%s) of study %s from %s", series_uid, received.ids.modality,
                     received.ids.study_uid, received.calling_ae_title)
        self.known.add(series_uid)

    def _fail(
        self, status: Status, message: str, calling: str, uid: str | None, *, record: bool = True
    ) -> Status:
        log.warning("%s [status 0x%04X, from %s]", message, int(status), calling)
        if record:
            try:
                with self.database.session() as session:
                    record_event(session, "store_failed", message[:2000], calling_ae_title=calling,
                                 uid=(uid or None) and uid[:64])
            except Exception:
                log.exception("cannot record the failure in the index")
        return status
