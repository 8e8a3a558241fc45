"""The node's upper layer against peers that misbehave: every case ends in a status or an A-ABORT and a log
line, never a crash or a hang, and the node keeps serving. Raw sockets play the broken peers; DCMTK the
well-behaved one with tiny PDUs."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.pdu_primitives import MaximumLengthNotification

from tests.support.dcmtk import storescu
from tests.receive.raw_peer import RawPeer, associate_rq, pdu, pdv, store_command
from tests.support.dicom_factory import dataset_bytes_after_meta, write_series
from tests.support.node_process import NodeProcess, echo

PDU_MAX = 16384
ACSE_TIMEOUT = 1.0
NETWORK_TIMEOUT = 2.0
DIMSE_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with small PDUs, short timeouts and room for two associations."""
    extra = {"node": {"pdu_max_length": PDU_MAX, "acse_timeout": ACSE_TIMEOUT, "network_timeout": NETWORK_TIMEOUT,
                      "dimse_timeout": DIMSE_TIMEOUT, "max_associations": 2}}
    with NodeProcess(tmp_path_factory.mktemp("strict"), extra=extra) as running:
        yield running


def still_serving(node: NodeProcess) -> None:
    """Both association slots are free again (soon after the peer is gone) and C-ECHO works."""
    node.wait_for(lambda: _both_slots_free(node.port), timeout=10)
    node.wait_for(lambda: echo(node.port), timeout=10)


def _both_slots_free(port: int) -> bool:
    holders = [RawPeer(port), RawPeer(port)]
    try:
        for holder in holders:
            holder.send(associate_rq(Verification))
        return all((answer := holder.read_pdu()) is not None and answer[0] == 0x02 for holder in holders)
    finally:
        for holder in holders:
            holder.sock.close()


def test_accept_advertises_the_configured_maximum_pdu_length(strict: NodeProcess) -> None:
    with RawPeer(strict.port) as peer:
        accepted = peer.associate(CTImageStorage)
        items = [item.to_primitive() for item in accepted.user_information.user_data]
        limits = [item for item in items if isinstance(item, MaximumLengthNotification)]
        assert limits[0].maximum_length_received == PDU_MAX


def test_dataset_split_across_many_pdvs_and_pdus_is_stored_byte_for_byte(strict: NodeProcess, tmp_path: Path) -> None:
    path = write_series(tmp_path / "series", 1)[0]
    data = dataset_bytes_after_meta(path)
    ds = dcmread(path)
    with RawPeer(strict.port) as peer:
        peer.associate(CTImageStorage)
        peer.send(pdu(0x04, pdv(1, 0x03, store_command(CTImageStorage, ds.SOPInstanceUID))))
        pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
        for start in range(0, len(pieces), 3):  # three PDVs per P-DATA-TF
            group = pieces[start : start + 3]
            last_group = start + 3 >= len(pieces)
            last = len(group) - 1 if last_group else -1
            peer.send(pdu(0x04, b"".join(pdv(1, 0x02 if n == last else 0x00, piece) for n, piece in enumerate(group))))
        assert peer.read_response_status() == 0x0000
        peer.send(pdu(0x05, b"\x00" * 4))
        assert peer.read_pdu() == (0x06, b"\x00" * 4)
    stored = strict.storage_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert dataset_bytes_after_meta(stored) == data


def test_storescu_with_small_pdus_stores_everything(strict: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "series", 3, rows=256, columns=256)
    result = storescu(strict.port, files, extra=["--max-send-pdu", "4096"])
    assert result.returncode == 0, result.stderr
    for path in files:
        ds = dcmread(path)
        stored = strict.storage_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert dataset_bytes_after_meta(stored) == dataset_bytes_after_meta(path)


def test_unknown_pdu_type_is_aborted(strict: NodeProcess) -> None:
    with RawPeer(strict.port) as peer:
        peer.send(pdu(0x42, b"\x00" * 8))
        assert peer.closed_after_abort()
    strict.wait_for(lambda: "unrecognised PDU type 0x42" in strict.log(), timeout=5)
    still_serving(strict)


def assert_aborted_on_association(node: NodeProcess, data: bytes) -> None:
    """Open an association for CT Image Storage, send ``data`` on it, and check the node aborts it."""
    with RawPeer(node.port) as peer:
        peer.associate(CTImageStorage)
        peer.send(data)
        assert peer.closed_after_abort()


def test_malformed_associate_request_is_aborted(strict: NodeProcess) -> None:
    with RawPeer(strict.port) as peer:
        peer.send(pdu(0x01, b"\x00\x01" + b"\xff" * 40))
        assert peer.closed_after_abort()
    strict.wait_for(lambda: "malformed A-ASSOCIATE-RQ" in strict.log(), timeout=5)
    still_serving(strict)


def test_p_data_before_association_is_aborted(strict: NodeProcess) -> None:
    with RawPeer(strict.port) as peer:
        peer.send(pdu(0x04, pdv(1, 0x03, b"\x00" * 8)))
        assert peer.closed_after_abort()
    still_serving(strict)


def test_p_data_for_an_unaccepted_context_is_aborted(strict: NodeProcess) -> None:
    assert_aborted_on_association(strict, pdu(0x04, pdv(3, 0x03, store_command(CTImageStorage, "1.2.3.4"))))
    strict.wait_for(lambda: "presentation context 3, which was not accepted" in strict.log(), timeout=5)
    still_serving(strict)


def test_malformed_pdv_and_command_are_aborted(strict: NodeProcess) -> None:
    item_longer_than_its_pdu = struct.pack(">IBB", 5000, 1, 0x03) + b"\x00" * 10
    assert_aborted_on_association(strict, pdu(0x04, item_longer_than_its_pdu))
    element_longer_than_the_set = b"\x00\x00\x00\x01\xff\xff\xff\x7f"
    assert_aborted_on_association(strict, pdu(0x04, pdv(1, 0x03, element_longer_than_the_set)))
    strict.wait_for(lambda: "malformed command set element" in strict.log(), timeout=5)
    still_serving(strict)


def test_dataset_fragment_before_its_command_is_aborted(strict: NodeProcess) -> None:
    assert_aborted_on_association(strict, pdu(0x04, pdv(1, 0x02, b"\x08\x00\x16\x00")))
    strict.wait_for(lambda: "data set fragment before its command" in strict.log(), timeout=5)


def test_pdu_longer_than_the_negotiated_maximum_is_aborted(strict: NodeProcess) -> None:
    assert_aborted_on_association(strict, pdu(0x04, pdv(1, 0x00, b"\x00" * (PDU_MAX + 100))))
    strict.wait_for(lambda: f"exceeds the limit of {PDU_MAX}" in strict.log(), timeout=5)
    still_serving(strict)


def test_unexpected_pdu_on_an_established_association_is_aborted(strict: NodeProcess) -> None:
    assert_aborted_on_association(strict, associate_rq(CTImageStorage))
    still_serving(strict)


def test_unsupported_dimse_command_is_answered_unrecognized(strict: NodeProcess) -> None:
    command = bytearray(store_command(CTImageStorage, "1.2.3.4"))
    find = struct.pack("<HHIH", 0x0000, 0x0100, 2, 0x0020)  # Command Field C-FIND-RQ
    at = command.index(struct.pack("<HHIH", 0x0000, 0x0100, 2, 0x0001))
    command[at : at + len(find)] = find
    with_data_set = struct.pack("<HHIH", 0x0000, 0x0800, 2, 0x0001)
    at = command.index(with_data_set)
    command[at : at + len(with_data_set)] = struct.pack("<HHIH", 0x0000, 0x0800, 2, 0x0101)  # no dataset follows
    with RawPeer(strict.port) as peer:
        peer.associate(CTImageStorage)
        peer.send(pdu(0x04, pdv(1, 0x03, bytes(command))))
        assert peer.read_response_status() == 0x0211
        peer.send(pdu(0x05, b"\x00" * 4))
        assert peer.read_pdu() == (0x06, b"\x00" * 4)


def test_silence_before_the_request_ends_in_a_closed_connection(strict: NodeProcess) -> None:
    started = time.monotonic()
    with RawPeer(strict.port) as peer:
        assert peer.read_pdu() is None
    assert time.monotonic() - started < ACSE_TIMEOUT + 5
    strict.wait_for(lambda: "node.acse_timeout" in strict.log(), timeout=5)
    still_serving(strict)


def test_silence_on_an_association_is_aborted_and_frees_its_slot(strict: NodeProcess) -> None:
    started = time.monotonic()
    with RawPeer(strict.port) as peer:
        peer.associate(CTImageStorage)
        assert peer.closed_after_abort()
    assert NETWORK_TIMEOUT <= time.monotonic() - started < NETWORK_TIMEOUT + 5
    strict.wait_for(lambda: "node.network_timeout" in strict.log(), timeout=5)
    still_serving(strict)


def test_silence_inside_a_message_is_aborted_after_the_dimse_timeout(strict: NodeProcess) -> None:
    started = time.monotonic()
    assert_aborted_on_association(strict, pdu(0x04, pdv(1, 0x03, store_command(CTImageStorage, "1.2.3.4"))))  # its dataset never comes
    assert DIMSE_TIMEOUT <= time.monotonic() - started < NETWORK_TIMEOUT
    strict.wait_for(lambda: "message incomplete after 1.5 s (node.dimse_timeout)" in strict.log(), timeout=5)
    still_serving(strict)


def test_peer_vanishing_mid_dataset_leaves_no_file_and_frees_its_slot(strict: NodeProcess, tmp_path: Path) -> None:
    path = write_series(tmp_path / "series", 1)[0]
    ds = dcmread(path)
    data = dataset_bytes_after_meta(path)
    before = set(strict.storage_dir.rglob("*"))
    with RawPeer(strict.port) as peer:
        peer.associate(CTImageStorage)
        peer.send(pdu(0x04, pdv(1, 0x03, store_command(CTImageStorage, ds.SOPInstanceUID))))
        peer.send(pdu(0x04, pdv(1, 0x00, data[:4000])))
        peer.sock.shutdown(socket.SHUT_RDWR)
    strict.wait_for(lambda: "ended without release" in strict.log(), timeout=5)
    still_serving(strict)
    after = {p for p in set(strict.storage_dir.rglob("*")) - before if p.suffix in (".dcm", ".partial")}
    assert after == set()
