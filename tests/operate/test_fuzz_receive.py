"""Fuzzing the receiving path of a real `pacsnode serve` (hypothesis, bounded in examples and time):
malformed PDUs over raw sockets and malformed datasets over real associations. The node keeps serving,
answers every C-STORE with a status, and what it stored before stays intact."""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from node.db import Instance
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import dataset_bytes_after_meta, write_series
from tests.support.node_process import NodeProcess, echo

pytestmark = pytest.mark.timeout(240)

FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
TIME_BUDGET = 12.0  # seconds per fuzz test, whatever the number of examples reached


def _a_associate_rq() -> bytes:
    """A valid A-ASSOCIATE-RQ for C-ECHO, encoded by pynetdicom, as the seed for mutations."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "FUZZER"
    primitive.called_ae_title = "PACSNODE"
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


SEED_PDU = _a_associate_rq()


@st.composite
def malformed_pdus(draw: st.DrawFn) -> bytes:
    """Random PDU headers with lying lengths, and mutated association requests."""
    kind = draw(st.sampled_from(["header", "mutate", "truncate"]))
    if kind == "header":
        pdu_type = draw(st.integers(0, 255))
        body = draw(st.binary(max_size=256))
        length = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
        return struct.pack(">BBL", pdu_type, 0, length) + body
    data = bytearray(SEED_PDU)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    extra = {"node": {"acse_timeout": 2, "network_timeout": 3}}
    with NodeProcess(tmp_path_factory.mktemp("fuzz"), extra=extra) as running:
        yield running


@pytest.fixture(scope="module")
def baseline(node: NodeProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A series stored before any fuzzing: SOP Instance UID -> SHA-256 of its stored file."""
    files = write_series(tmp_path_factory.mktemp("baseline"), 5)
    assert storescu(node.port, files).returncode == 0
    return _stored_hashes(node)


def _stored_hashes(node: NodeProcess) -> dict[str, str]:
    with node.database.session() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.path)).all()
    return {uid: hashlib.sha256(Path(path).read_bytes()).hexdigest() for uid, path in rows}


def _assert_healthy(node: NodeProcess, baseline: dict[str, str], tmp_path: Path) -> None:
    assert node.process is not None and node.process.poll() is None, "the node died"
    assert echo(node.port, timeout=5), f"the node stopped answering C-ECHO:\n{node.log()[-3000:]}"
    hashes = _stored_hashes(node)
    for uid, digest in baseline.items():
        assert hashes[uid] == digest, f"stored instance {uid} changed"
    for uid, path in _paths(node).items():
        pydicom.dcmread(path, stop_before_pixels=True)  # every indexed file is a readable DICOM file
    files = write_series(tmp_path / "after", 2)
    assert storescu(node.port, files).returncode == 0  # and a good sender still gets through


def _paths(node: NodeProcess) -> dict[str, str]:
    with node.database.session() as session:
        return dict(session.execute(select(Instance.sop_instance_uid, Instance.path)).all())


def test_malformed_pdus_do_not_disturb_the_node(node: NodeProcess, baseline: dict[str, str], tmp_path: Path) -> None:
    started = time.monotonic()
    sent = 0

    @FUZZ
    @given(payload=malformed_pdus())
    def send(payload: bytes) -> None:
        nonlocal sent
        if time.monotonic() - started > TIME_BUDGET:
            return
        with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
            sock.settimeout(0.3)
            try:
                sock.sendall(payload)
                sock.recv(4096)  # an A-ASSOCIATE-RJ/AC, an A-ABORT, or nothing
            except (TimeoutError, ConnectionError):
                pass
        sent += 1

    send()
    assert sent >= 30
    _assert_healthy(node, baseline, tmp_path)


@st.composite
def malformed_datasets(draw: st.DrawFn, body: bytes) -> bytes:
    data = bytearray(body)
    kind = draw(st.sampled_from(["flip", "truncate", "insert"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "insert":
        position = draw(st.integers(0, len(data)))
        return bytes(data[:position] + draw(st.binary(min_size=1, max_size=64)) + data[position:])
    for _ in range(draw(st.integers(1, 16))):
        position = draw(st.integers(0, min(len(data) - 1, 1200)))  # mostly the header, where the tags are
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.fixture
def raw_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pynetdicom send a file's dataset bytes as they are, without parsing them first."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_malformed_datasets_get_a_status_and_do_not_disturb_the_node(
    node: NodeProcess, baseline: dict[str, str], tmp_path: Path, raw_store: None
) -> None:
    template = write_series(tmp_path / "template", 1)[0]
    meta = template.read_bytes()[: len(template.read_bytes()) - len(dataset_bytes_after_meta(template))]
    body = dataset_bytes_after_meta(template)
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    started = time.monotonic()
    statuses: list[int] = []

    @FUZZ
    @given(payload=malformed_datasets(body))
    def send(payload: bytes) -> None:
        if time.monotonic() - started > TIME_BUDGET:
            return
        path = tmp_path / "fuzzed.dcm"
        path.write_bytes(meta + payload)  # the valid file meta names the instance; the dataset is mangled
        assoc = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(path)
            if "Status" in status:
                statuses.append(int(status.Status))
        finally:
            if assoc.is_established:
                assoc.release()

    send()
    assert len(statuses) >= 30
    assert any(s != 0 for s in statuses)  # the node refused the unreadable ones with a failure status
    _assert_healthy(node, baseline, tmp_path)
