"""C-STORE SCU: send DICOM files or datasets to a peer and report what happened to each.

A pure function of its arguments (no database, no settings object): the outbox, `pacsnode send`
and the tests all use it. It proposes exactly the (SOP class, transfer syntax) pairs of what it
sends, one presentation context each, and splits into several associations past the 128-context
limit. Nagle's algorithm is switched off on every connection (pynetdicom has no option for it).
"""

from __future__ import annotations

import enum
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from node.dicom.peer_watch import PeerWatch
from node.operate.redaction import describe_error, redact
from node.dicom.upstream import pynetdicom_config, pynetdicom_reactor
from node.dicom.status import is_success

log = logging.getLogger(__name__)

pynetdicom_config.apply()  # files go out as their stored bytes, without decoding them

MAX_CONTEXTS = 128

class Failure(str, enum.Enum):
    """Why an object got no C-STORE status."""

    connection = "connection"  # TCP connection refused or unreachable
    timeout = "timeout"  # connect, ACSE or DIMSE timeout
    rejected_permanent = "rejected-permanent"
    rejected_transient = "rejected-transient"
    aborted = "aborted"
    not_accepted = "not-accepted"  # no presentation context accepted for its SOP class / syntax
    invalid = "invalid"  # unreadable file, missing UIDs: sending again will not help


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one object: a DIMSE status, or the failure that kept it from getting one."""

    source: str
    sop_class_uid: str
    sop_instance_uid: str
    status: int | None = None
    failure: Failure | None = None
    error: str = ""

    @property
    def stored(self) -> bool:
        """True for Success and the storage Warnings (B000, B006, B007)."""
        return is_success(self.status)

    def describe(self) -> str:
        if self.status is not None:
            return f"status 0x{self.status:04X}" + (f" ({self.error})" if self.error else "")
        return f"{self.failure.value if self.failure else 'unknown'}: {self.error}"


@dataclass(frozen=True)
class _Item:
    source: str
    payload: Path | Dataset
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


Progress = Callable[[int, int, StoreOutcome], None]
StoreInput = str | os.PathLike[str] | Dataset


def _describe_item(obj: StoreInput, index: int) -> _Item | StoreOutcome:
    """Read what the contexts need (SOP class, instance, transfer syntax) without reading pixel data."""
    if isinstance(obj, Dataset):
        source = f"dataset[{index}]"
        sop_class = str(obj.get("SOPClassUID", ""))
        sop_instance = str(obj.get("SOPInstanceUID", ""))
        meta = getattr(obj, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if not syntax:
            syntax = ImplicitVRLittleEndian if obj.is_implicit_VR else ExplicitVRLittleEndian
        payload: Path | Dataset = obj
    else:
        path = Path(obj)
        source = str(path)
        try:
            meta = read_file_meta_info(path)
        except (OSError, InvalidDicomError) as exc:
            return StoreOutcome(source, "", "", failure=Failure.invalid, error=f"cannot read DICOM file: {exc}")
        sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
        sop_instance = str(meta.get("MediaStorageSOPInstanceUID", ""))
        syntax = str(meta.get("TransferSyntaxUID", ""))
        payload = path
    if not (sop_class and sop_instance and syntax):
        return StoreOutcome(
            source, sop_class, sop_instance, failure=Failure.invalid,
            error="missing SOP Class UID, SOP Instance UID or Transfer Syntax UID (file meta information)",
        )
    return _Item(source, payload, sop_class, sop_instance, syntax)


def _batches(items: Sequence[_Item]) -> list[list[_Item]]:
    """Group items so that no association needs more than MAX_CONTEXTS presentation contexts."""
    batches: list[list[_Item]] = []
    pairs_of: list[set[tuple[str, str]]] = []
    for item in items:
        pair = (item.sop_class_uid, item.transfer_syntax_uid)
        for batch, pairs in zip(batches, pairs_of):
            if pair in pairs or len(pairs) < MAX_CONTEXTS:
                batch.append(item)
                pairs.add(pair)
                break
        else:
            batches.append([item])
            pairs_of.append({pair})
    return batches


def _setup_failure(assoc: Association, watch: PeerWatch, elapsed: float, connect_timeout: float,
                   where: str) -> tuple[Failure, str]:
    rejection = watch.find_unread_rejection(assoc) if assoc.is_rejected or not watch.answered else watch.rejection
    if rejection is not None:
        kind = Failure.rejected_permanent if rejection.permanent else Failure.rejected_transient
        return kind, (f"association rejected by {where} ({rejection.text}; result {rejection.result}, "
                      f"source {rejection.source}, diagnostic {rejection.diagnostic})")
    if assoc.is_rejected:
        return Failure.rejected_transient, f"association rejected by {where} (no reason given)"
    if not watch.connected:
        if elapsed >= connect_timeout * 0.95:
            return Failure.timeout, f"no TCP connection to {where} within {connect_timeout:g} s"
        return Failure.connection, f"cannot connect to {where} (connection refused or unreachable)"
    if not watch.answered:
        acse_timeout = assoc.acse_timeout
        ended = watch.ended()
        if ended is not None and (acse_timeout is None or elapsed < acse_timeout * 0.95):
            return Failure.aborted, f"{where} ended the association request: {ended}"
        return Failure.timeout, f"no association response from {where} (ACSE timeout)"
    if assoc.is_aborted and not assoc.accepted_contexts and not assoc.rejected_contexts:
        return Failure.aborted, f"association aborted by {where} during negotiation: {watch.ended() or 'A-ABORT'}"
    if assoc.is_aborted:
        refused = ", ".join(f"{cx.abstract_syntax} ({cx.transfer_syntax[0]})" for cx in assoc.rejected_contexts)
        return Failure.not_accepted, f"{where} accepted none of the proposed SOP classes / transfer syntaxes: {refused}"
    return Failure.timeout, f"no association response from {where} (ACSE timeout)"


def _send_batch(
    ae: AE, batch: list[_Item], called_ae_title: str, host: str, port: int, connect_timeout: float,
    max_pdu: int, emit: Callable[[StoreOutcome], None], tls: tuple[ssl.SSLContext, str] | None = None,
) -> None:
    where = f"{called_ae_title}@{host}:{port}"
    contexts = []
    for pair in dict.fromkeys((i.sop_class_uid, i.transfer_syntax_uid) for i in batch):
        contexts.append(build_context(pair[0], [pair[1]]))
    watch = PeerWatch()
    started = time.monotonic()
    assoc = ae.associate(
        host, port, contexts=contexts, ae_title=called_ae_title, max_pdu=max_pdu, evt_handlers=watch.handlers(),
        tls_args=tls,
    )
    if not assoc.is_established:
        failure, message = _setup_failure(assoc, watch, time.monotonic() - started, connect_timeout, where)
        log.warning("C-STORE to %s: %s", where, message)
        for item in batch:
            emit(StoreOutcome(item.source, item.sop_class_uid, item.sop_instance_uid, failure=failure, error=message))
        return
    pynetdicom_reactor.install(assoc)
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    try:
        for position, item in enumerate(batch):
            ended = watch.ended()
            if not assoc.is_established or ended is not None:
                message = f"not sent: {where} ended the association before it ({ended or 'released'})"
                for rest in batch[position:]:
                    emit(StoreOutcome(rest.source, rest.sop_class_uid, rest.sop_instance_uid, failure=Failure.aborted, error=message))
                return
            if (item.sop_class_uid, item.transfer_syntax_uid) not in accepted:
                emit(StoreOutcome(
                    item.source, item.sop_class_uid, item.sop_instance_uid, failure=Failure.not_accepted,
                    error=f"{where} did not accept SOP class {item.sop_class_uid} with transfer syntax {item.transfer_syntax_uid}",
                ))
                continue
            emit(_store_one(assoc, watch, item, where))
    finally:
        if assoc.is_established and watch.ended() is None:
            assoc.release()


def _store_one(assoc: Association, watch: PeerWatch, item: _Item, where: str) -> StoreOutcome:
    started = time.monotonic()
    try:
        status = assoc.send_c_store(item.payload)
    except (AttributeError, ValueError, OSError) as exc:
        return StoreOutcome(item.source, item.sop_class_uid, item.sop_instance_uid, failure=Failure.invalid,
                            error=describe_error(exc))
    if "Status" in status:
        code = int(status.Status)
        comment = redact(str(status.get("ErrorComment", "") or ""))  # the peer's text: it may quote values
        return StoreOutcome(item.source, item.sop_class_uid, item.sop_instance_uid, status=code, error=comment)
    waited = time.monotonic() - started
    timeout = assoc.dimse_timeout
    ended = watch.ended()
    if ended is not None and (timeout is None or waited < timeout):
        failure, message = Failure.aborted, f"{where} broke off the transfer after {waited:.1f} s: {ended}"
    elif timeout is not None and waited >= timeout:  # pynetdicom aborts the association itself on a DIMSE timeout
        failure, message = Failure.timeout, f"no C-STORE response from {where} in {timeout:g} s (DIMSE timeout)"
    else:
        failure, message = Failure.aborted, f"no valid C-STORE response from {where} after {waited:.1f} s"
    return StoreOutcome(item.source, item.sop_class_uid, item.sop_instance_uid, failure=failure, error=message)


def send_objects(
    objects: Iterable[StoreInput],
    called_ae_title: str,
    host: str,
    port: int,
    *,
    calling_ae_title: str = "PACSNODE",
    connect_timeout: float = 10.0,
    acse_timeout: float = 30.0,
    dimse_timeout: float = 60.0,
    network_timeout: float = 60.0,
    max_pdu: int = 0,
    progress: Progress | None = None,
    tls: tuple[ssl.SSLContext, str] | None = None,
) -> list[StoreOutcome]:
    """C-STORE ``objects`` (paths or datasets) to ``called_ae_title@host:port``; one outcome per object.

    Outcomes come back in the order of ``objects``. Never raises for network or peer problems: each
    object's outcome says what happened (``outcome.stored`` is True for Success and Warning statuses).
    ``progress(done, total, outcome)`` is called after each object. ``tls`` is (client context, server
    name) for DICOM TLS.
    """
    inputs = list(objects)
    total = len(inputs)
    outcomes: dict[int, StoreOutcome] = {}
    order: dict[str, list[int]] = {}
    done = 0

    def emit_at(index: int, outcome: StoreOutcome) -> None:
        nonlocal done
        outcomes[index] = outcome
        done += 1
        if progress is not None:
            progress(done, total, outcome)

    items: list[_Item] = []
    for index, obj in enumerate(inputs):
        described = _describe_item(obj, index)
        if isinstance(described, StoreOutcome):
            emit_at(index, described)
        else:
            items.append(described)
            order.setdefault(described.source + "\0" + described.sop_instance_uid, []).append(index)

    def emit(outcome: StoreOutcome) -> None:
        emit_at(order[outcome.source + "\0" + outcome.sop_instance_uid].pop(0), outcome)

    if items:
        ae = AE(ae_title=calling_ae_title)
        ae.connection_timeout = connect_timeout
        ae.acse_timeout = acse_timeout
        ae.dimse_timeout = dimse_timeout
        ae.network_timeout = network_timeout
        for batch in _batches(items):
            _send_batch(ae, batch, called_ae_title, host, port, connect_timeout, max_pdu, emit, tls)
    return [outcomes[i] for i in range(total)]
