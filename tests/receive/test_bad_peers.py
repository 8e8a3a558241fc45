"""Peers that try to exhaust the node, against a running node with its default limits: a keep-alive flood from
one address or many, connections that trickle or half-send their association request. Configured senders still
store; what a bad peer costs stays bounded. The attackers call from other loopback addresses (127.0.0.2 and up),
which the node sees as other hosts; the configured sender calls from 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.support.dcmtk import LIMIT_REFUSAL, storescu
from tests.receive.raw_peer import RawPeer, associate_rq, pdu, pdv, store_command
from tests.support import procfs
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess, echo

pytestmark = pytest.mark.timeout(120)

SENDER = "CTSCANNER"  # configured under `senders` at 127.0.0.1
DEFAULT_PER_HOST = 10  # node.max_associations_per_host and node.max_pending_per_host
DEFAULT_MAX, DEFAULT_RESERVED = 25, 5
CONGESTION = (0x02, 0x03, 0x01)
LOCAL_LIMIT = (0x02, 0x03, 0x02)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """The default limits and timeouts; one configured sender."""
    extra = {"senders": [{"ae_title": SENDER, "host": "127.0.0.1", "port": 104}]}
    with NodeProcess(tmp_path_factory.mktemp("node"), extra=extra) as running:
        yield running


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return write_series(tmp_path / "series", 5)


def _rejection(body: bytes) -> tuple[int, int, int]:
    return body[1], body[2], body[3]


def _associate(stack: ExitStack, port: int, source: str, calling: str) -> tuple[RawPeer, tuple[int, int, int] | None]:
    """Request a Verification association from ``source``; (peer, None) when accepted, else the rejection."""
    peer = stack.enter_context(RawPeer(port, source=source))
    peer.send(associate_rq(Verification, calling=calling))
    answer = peer.read_pdu()
    assert answer is not None, "the node closed the connection without answering"
    return peer, None if answer[0] == 0x02 else _rejection(answer[1])


def _flood(stack: ExitStack, port: int, callers: list[tuple[str, str]]) -> tuple[list[RawPeer], list]:
    """Associations that stay open (held) and the rejections of the others, whose connections are closed."""
    held, refused = [], []
    for source, calling in callers:
        peer, rejection = _associate(stack, port, source, calling)
        if rejection is None:
            held.append(peer)
        else:
            refused.append(rejection)
            peer.sock.close()
    return held, refused


def test_one_address_cannot_hold_every_slot(node: NodeProcess, series: list[Path]) -> None:
    """25 associations kept alive from one address under as many AE titles: it gets its share, the rest are refused
    as a local limit, and the configured sender and other callers still store."""
    with ExitStack() as stack:
        held, refused = _flood(stack, node.port, [("127.0.0.2", f"FLOODER{n}") for n in range(DEFAULT_MAX)])
        assert len(held) == DEFAULT_PER_HOST
        assert set(refused) == {LOCAL_LIMIT}
        assert all(peer.echo(message_id=2) == 0 for peer in held)  # the keep-alive is still answered
        sent = storescu(node.port, series, calling=SENDER)
        assert sent.returncode == 0, sent.stderr
        other = storescu(node.port, series, calling="WORKSTATION")  # not configured, another address
        assert other.returncode == 0, other.stderr
    assert "node.max_associations_per_host" in node.log()
    node.wait_for(lambda: echo(node.port), timeout=10)


def test_slots_are_kept_for_configured_senders(node: NodeProcess, series: list[Path]) -> None:
    """A flood from five addresses under 25 AE titles fills what others may use; the configured sender still
    stores in the reserved slots, while an unconfigured caller is refused."""
    callers = [(f"127.0.0.{3 + n % 5}", f"FLOOD{n}") for n in range(DEFAULT_MAX)]
    with ExitStack() as stack:
        held, refused = _flood(stack, node.port, callers)
        assert len(held) == DEFAULT_MAX - DEFAULT_RESERVED and set(refused) == {LOCAL_LIMIT}
        sent = storescu(node.port, series, calling=SENDER)
        assert sent.returncode == 0, sent.stderr
        stranger = storescu(node.port, series, calling="WORKSTATION")
        assert stranger.returncode != 0 and LIMIT_REFUSAL in stranger.stderr
    assert "node.reserved_associations" in node.log()
    node.wait_for(lambda: echo(node.port), timeout=10)


def _receiver(node: NodeProcess) -> int:
    assert node.process is not None
    [pid] = procfs.receiving_processes(node.process.pid)
    return pid


def _trickler(source: str, port: int, declared: int, first: bytes) -> socket.socket:
    """A connection that declares an A-ASSOCIATE-RQ of ``declared`` bytes and sends only ``first`` of it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(struct.pack(">BxI", 0x01, declared) + first)
    return sock


def _turned_away(sock: socket.socket) -> bool:
    """True when the node answered at once with A-ASSOCIATE-RJ (temporary congestion) and closed."""
    sock.settimeout(2)
    try:
        data = sock.recv(64)
    except OSError:
        return False
    if data[:1] != b"\x03" or _rejection(data[6:10]) != CONGESTION:
        return False
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:  # what the test sent after the node closed
        return True


def test_connections_still_negotiating_are_capped_per_address(node: NodeProcess, series: list[Path]) -> None:
    """40 connections trickling their association request from one address: 10 cost a thread each, the other 30
    are turned away at once; the configured sender stores meanwhile."""
    receiver = _receiver(node)
    threads_before = procfs.threads(receiver)
    sockets = [_trickler("127.0.0.8", node.port, 300, b"\x00") for _ in range(40)]
    try:
        for _ in range(3):  # a byte each, now and then: never silent for a whole node.acse_timeout
            time.sleep(0.3)
            for sock in sockets[:DEFAULT_PER_HOST]:
                sock.sendall(b"\x00")
        assert [_turned_away(sock) for sock in sockets[DEFAULT_PER_HOST:]] == [True] * 30
        threads = procfs.threads(receiver)
        print(f"40 trickling connections: {threads_before} threads before, {threads} during")
        assert threads <= threads_before + DEFAULT_PER_HOST
        sent = storescu(node.port, series, calling=SENDER)
        assert sent.returncode == 0, sent.stderr
    finally:
        for sock in sockets:
            sock.close()
    assert "node.max_pending_per_host" in node.log()
    assert node.log().count("before association: 10 connections from it") <= 2  # refusals are summarised


def test_a_declared_length_costs_nothing_until_it_arrives(node: NodeProcess) -> None:
    """200 connections from five addresses each declare a 1 MB A-ASSOCIATE-RQ and send 64 kB of it: 50 are kept
    (node.max_pending_connections), 150 turned away, and the receiver holds what arrived, not what was declared
    (50 MB declared; the buffers used to be sized to twice the declaration up front)."""
    receiver = _receiver(node)
    before = procfs.resident_bytes(receiver)
    body = b"\x00" * 65536
    sockets = []
    try:
        for n in range(200):
            sockets.append(_trickler(f"127.0.0.{10 + n % 5}", node.port, 1024 * 1024 - 1, body))
        time.sleep(1.0)
        grown = procfs.resident_bytes(receiver) - before
        assert sum(_turned_away(sock) for sock in sockets[50:]) == 150
    finally:
        for sock in sockets:
            sock.close()
    print(f"200 half-sent requests: the receiver grew by {grown / 1e6:.1f} MB")
    assert grown < 25 * 1024 * 1024, f"the receiver grew by {grown / 1e6:.1f} MB"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """Deadlines of 2 s (the defaults are 30 s and 60 s) and long silences allowed, so only a deadline can end a
    connection that keeps trickling."""
    extra = {"node": {"acse_timeout": 2, "pdu_timeout": 2, "network_timeout": 30, "dimse_timeout": 30}}
    with NodeProcess(tmp_path_factory.mktemp("quick"), extra=extra) as running:
        yield running


def _trickle_until_closed(sock: socket.socket, data: bytes, every: float, limit: float) -> float:
    """Send ``data`` a byte at a time; the seconds until the node closed the connection."""
    started = time.monotonic()
    sock.settimeout(every)
    for byte in data:
        if time.monotonic() - started > limit:
            break
        try:
            sock.sendall(bytes([byte]))
            answer = sock.recv(4096)
            if answer == b"" or answer[:1] == b"\x07":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"the node kept the connection open for {time.monotonic() - started:.1f} s")


def test_a_trickled_association_request_is_cut_at_its_deadline(quick: NodeProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", quick.port), timeout=5)
    with sock:
        closed_after = _trickle_until_closed(sock, associate_rq(Verification), every=0.25, limit=10)
    assert 1.5 < closed_after < 4
    assert "A-ASSOCIATE-RQ incomplete at its deadline" in quick.log()


def test_a_trickled_pdu_is_aborted_at_its_deadline(quick: NodeProcess) -> None:
    with RawPeer(quick.port) as peer:
        peer.associate("1.2.840.10008.5.1.4.1.1.2")
        command = pdu(0x04, pdv(1, 0x03, store_command("1.2.840.10008.5.1.4.1.1.2", "1.2.3")))
        closed_after = _trickle_until_closed(peer.sock, command, every=0.25, limit=10)
    assert 1.5 < closed_after < 4
    assert "node.pdu_timeout" in quick.log()
