"""The C-STORE SCU against real peers: DCMTK storescp and Orthanc on loopback."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage

from node.dicom.scu import MAX_CONTEXTS, Failure, send_objects
from node.dicom.upper_layer.acse import reject
from node.ports import free_port
from tests.support.breaking_proxy import BreakingProxy
from tests.support.dicom_factory import write_series
from tests.support.peers import StoreSCP


def _copies(source: str, directory: Path, count: int, sop_class: str | None = None) -> list[Path]:
    """``count`` copies of a file with new instance UIDs (and optionally another SOP class)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = pydicom.dcmread(source)
        uid = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        if sop_class:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        path = directory / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_files_are_stored_by_storescp(storescp: StoreSCP, ct_files: list[str]) -> None:
    outcomes = send_objects(ct_files, storescp.ae_title, "127.0.0.1", storescp.port)
    assert [o.status for o in outcomes] == [0x0000, 0x0000]
    assert all(o.stored for o in outcomes)
    received = {pydicom.dcmread(p).SOPInstanceUID for p in storescp.received()}
    assert received == {pydicom.dcmread(f).SOPInstanceUID for f in ct_files}


def test_datasets_are_stored_too(storescp: StoreSCP, ct_files: list[str]) -> None:
    ds = pydicom.dcmread(ct_files[0])
    [outcome] = send_objects([ds], storescp.ae_title, "127.0.0.1", storescp.port)
    assert outcome.stored and outcome.sop_instance_uid == ds.SOPInstanceUID


def test_several_objects_share_one_association(tmp_path: Path, ct_files: list[str]) -> None:
    """A pynetdicom SCP counts associations and the contexts proposed: exactly the pairs sent, one association."""
    associations: list[list[tuple[str, str]]] = []
    stored: list[str] = []

    def on_request(event: evt.Event) -> None:
        associations.append(
            [(str(cx.abstract_syntax), tuple(cx.transfer_syntax)) for cx in event.assoc.requestor.requested_contexts]
        )

    def on_store(event: evt.Event) -> int:
        stored.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="COUNTER")
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False,
        evt_handlers=[(evt.EVT_REQUESTED, on_request), (evt.EVT_C_STORE, on_store)],
    )
    try:
        files = _copies(ct_files[0], tmp_path / "ct", 5)
        outcomes = send_objects(files, "COUNTER", "127.0.0.1", port)
    finally:
        server.shutdown()
    assert all(o.status == 0 for o in outcomes)
    assert len(stored) == 5
    assert len(associations) == 1
    syntax = str(pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID)
    assert associations[0] == [(CTImageStorage, (syntax,))]


def test_more_than_128_pairs_split_into_associations(tmp_path: Path, ct_files: list[str]) -> None:
    """130 distinct storage SOP classes cannot share one association; every object still gets a status."""
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts[: MAX_CONTEXTS + 2]]
    files = [p for i, c in enumerate(classes) for p in _copies(ct_files[0], tmp_path / f"c{i}", 1, sop_class=c)]
    associations = []
    ae = AE(ae_title="MANY")
    for uid in classes:
        ae.add_supported_context(uid, "1.2.840.10008.1.2.1")
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False,
        evt_handlers=[(evt.EVT_REQUESTED, lambda e: associations.append(len(e.assoc.requestor.requested_contexts))),
                      (evt.EVT_C_STORE, lambda e: 0x0000)],
    )
    try:
        outcomes = send_objects(files, "MANY", "127.0.0.1", port, dimse_timeout=5)
    finally:
        server.shutdown()
    assert sorted(associations) == [2, MAX_CONTEXTS]
    assert all(o.status == 0 for o in outcomes)


def test_sop_class_refused_in_negotiation_is_reported(tmp_path: Path, ct_files: list[str], storescp: StoreSCP) -> None:
    """storescp does not know a private SOP class: that object is not-accepted, the CT still goes."""
    private = _copies(ct_files[0], tmp_path / "p", 1, sop_class="1.2.826.0.1.3680043.8.498.77")
    outcomes = send_objects([ct_files[0], *private], storescp.ae_title, "127.0.0.1", storescp.port)
    assert outcomes[0].status == 0
    assert outcomes[1].failure is Failure.not_accepted
    assert "1.2.826.0.1.3680043.8.498.77" in outcomes[1].error


def test_connection_refused(ct_files: list[str]) -> None:
    [outcome] = send_objects(ct_files[:1], "NOBODY", "127.0.0.1", free_port(), connect_timeout=2)
    assert outcome.failure is Failure.connection and not outcome.stored


def test_silent_peer_times_out(ct_files: list[str]) -> None:
    """A socket that accepts but never answers: the ACSE timeout ends the attempt, no hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        [outcome] = send_objects(ct_files[:1], "SILENT", "127.0.0.1", port, acse_timeout=1, connect_timeout=1)
        assert time.monotonic() - started < 10
    finally:
        listener.close()
    assert outcome.failure is Failure.timeout


def test_unreadable_file_is_invalid(tmp_path: Path, storescp: StoreSCP, ct_files: list[str]) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    outcomes = send_objects([junk, ct_files[0]], storescp.ae_title, "127.0.0.1", storescp.port)
    assert outcomes[0].failure is Failure.invalid
    assert outcomes[1].status == 0


def test_failure_status_is_returned(ct_files: list[str]) -> None:
    """An SCP answering 0xA900 (data set does not match SOP class): the status comes back as is."""
    ae = AE(ae_title="PICKY")
    ae.add_supported_context(CTImageStorage, "1.2.840.10008.1.2.1")
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0xA900)])
    try:
        [outcome] = send_objects(ct_files[:1], "PICKY", "127.0.0.1", port)
    finally:
        server.shutdown()
    assert outcome.status == 0xA900 and not outcome.stored


def test_orthanc_stores_and_progress_is_reported(orthanc, ct_files: list[str]) -> None:
    seen: list[tuple[int, int]] = []
    outcomes = send_objects(
        ct_files, orthanc.ae_title, "127.0.0.1", orthanc.dicom_port, progress=lambda d, t, o: seen.append((d, t))
    )
    assert [o.status for o in outcomes] == [0, 0]
    assert seen == [(1, 2), (2, 2)]
    assert len(orthanc.instances()) == 2


def _rejecting_peer(answer: bytes) -> tuple[socket.socket, threading.Event]:
    """A socket that answers each connection with ``answer`` at once (before reading the request) and closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            connection.sendall(answer)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


@pytest.mark.parametrize(("result", "source", "diagnostic", "failure"), [
    (0x02, 0x03, 0x02, Failure.rejected_transient),  # local limit exceeded
    (0x01, 0x01, 0x03, Failure.rejected_permanent),  # calling AE title not recognised
])
def test_a_quick_rejection_is_read_with_its_reason(ct_files: list[str], result: int, source: int, diagnostic: int,
                                                   failure: Failure) -> None:
    """A peer that sends A-ASSOCIATE-RJ and closes before even reading the request: every attempt is reported as
    that rejection, with its result, source and diagnostic, never as an abort or a timeout."""
    listener, stop = _rejecting_peer(reject(result, source, diagnostic))
    try:
        port = listener.getsockname()[1]
        outcomes = [send_objects(ct_files[:1], "BUSY", "127.0.0.1", port)[0] for _ in range(20)]
    finally:
        stop.set()
        listener.close()
    assert {o.failure for o in outcomes} == {failure}
    assert all(f"result {result}, source {source}, diagnostic {diagnostic}" in o.error for o in outcomes)


@pytest.mark.parametrize("mode", ["abort", "reset"])
def test_a_peer_breaking_off_mid_transfer_is_reported_at_once(storescp: StoreSCP, tmp_path: Path, mode: str) -> None:
    """storescp behind a relay that aborts (A-ABORT) or resets the connection once 100 kB have gone through: the
    object in flight and the rest are reported as aborted within a second, with the default 120 s DIMSE timeout
    of deliveries; the next association stores them all."""
    files = write_series(tmp_path / "series", 40)  # ~8 kB each
    with BreakingProxy(storescp.port, mode=mode, after_bytes=100_000) as proxy:
        started = time.monotonic()
        outcomes = send_objects(files, storescp.ae_title, "127.0.0.1", proxy.port, dimse_timeout=120)
        elapsed = time.monotonic() - started
        again = send_objects(files, storescp.ae_title, "127.0.0.1", proxy.port, dimse_timeout=120)
    assert elapsed < 5
    broken = [o for o in outcomes if not o.stored]
    assert broken and all(o.failure is Failure.aborted for o in broken)
    expected = "A-ABORT from the service user" if mode == "abort" else "connection was closed or reset"
    assert expected in broken[0].error and "broke off the transfer" in broken[0].error
    assert all(o.status == 0 for o in again)
