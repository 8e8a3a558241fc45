"""Several receiving processes share the port; the association limit holds across all of them."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.support.dcmtk import LIMIT_REFUSAL, echoscu, storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess, echo


@pytest.fixture(scope="module")
def two_process_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    extra = {"node": {"receive_processes": 2, "max_associations": 3}}
    with NodeProcess(tmp_path_factory.mktemp("multi"), extra=extra) as running:
        yield running


def test_both_processes_receive_and_store_everything(two_process_node: NodeProcess, tmp_path: Path) -> None:
    node = two_process_node
    batches = [write_series(tmp_path / f"in{i}", 2) for i in range(12)]
    codes: list[int] = []

    def send_batches(mine: list[list[Path]]) -> None:
        for batch in mine:
            codes.append(storescu(node.port, batch).returncode)

    # Two senders at once, below node.max_associations (3): a sender's next association may start before the
    # node has counted its last one closed, and a third would then be refused as the limit says.
    threads = [threading.Thread(target=send_batches, args=(batches[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert codes == [0] * 12
    assert node.instance_count() == 24
    node.wait_for(lambda: len(re.findall(r"released: 2 stored", node.log())) == 12, timeout=10)
    handled_by = set(re.findall(r"(pacsnode-receiver-\d) node.receive.handler: association", node.log()))
    assert handled_by == {"pacsnode-receiver-0", "pacsnode-receiver-1"}  # 12 connections: 1 in 2048 to miss


def test_association_limit_counts_all_processes(two_process_node: NodeProcess) -> None:
    node = two_process_node
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", node.port, ae_title="PACSNODE") for _ in range(3)]
    try:
        assert all(a.is_established for a in held)
        for _ in range(3):  # whichever process takes it, the 4th is refused
            refusal = echoscu(node.port, calling="HOLDER")
            assert LIMIT_REFUSAL in refusal.stderr, f"4th association: {refusal.stderr}\nnode log:\n{node.log()[-3000:]}"
    finally:
        for assoc in held:
            assoc.release()
    node.wait_for(lambda: echo(node.port), timeout=10)


def receiver_pids(node: NodeProcess) -> list[int]:
    assert node.process is not None
    children = Path(f"/proc/{node.process.pid}/task/{node.process.pid}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


def test_a_receiver_that_dies_is_replaced_and_its_associations_forgotten(two_process_node: NodeProcess) -> None:
    node = two_process_node
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", node.port, ae_title="PACSNODE") for _ in range(3)]
    assert all(a.is_established for a in held)
    pids = receiver_pids(node)
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    node.wait_for(lambda: node.log().count("restarting it") >= 2, timeout=30)
    node.wait_for(lambda: len(set(receiver_pids(node)) - set(pids)) == 2, timeout=30)
    node.wait_for(lambda: echo(node.port), timeout=30)
    again = [ae.associate("127.0.0.1", node.port, ae_title="PACSNODE") for _ in range(3)]
    try:
        assert all(a.is_established for a in again)  # the dead processes' 3 associations no longer count
    finally:
        for assoc in again:
            assoc.release()
