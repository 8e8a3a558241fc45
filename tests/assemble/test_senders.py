"""Series completion against real senders over loopback: DCMTK storescu and pynetdicom.

The first node runs the default completion settings (settle 2 s, quiet 60 s); the second lowers only the
quiet period to 5 s, for the cases that must fall back to it (the defaults themselves are judged in
test_evidence_rules.py at chosen moments).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from node.db import Series, Study
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess

pytestmark = pytest.mark.timeout(120)

SETTLE = 2.0  # the default settle time
LOWERED_QUIET = 5.0


@pytest.fixture(scope="module")
def default_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with the default completion settings."""
    with NodeProcess(tmp_path_factory.mktemp("default"), extra={"node": {"completion": {"quiet_seconds": 60}}}) as node:
        yield node


@pytest.fixture(scope="module")
def quiet_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """The default settle time, the quiet period lowered to 5 s."""
    extra = {"node": {"completion": {"quiet_seconds": LOWERED_QUIET}}}
    with NodeProcess(tmp_path_factory.mktemp("quiet"), extra=extra) as node:
        yield node


def series_row(node: NodeProcess, series_uid: str) -> Series | None:
    with node.database.session() as session:
        return session.get(Series, series_uid)


def completed(node: NodeProcess, series_uid: str, timeout: float = 30) -> Series:
    return node.wait_for(lambda: (row := series_row(node, series_uid)) is not None and row.completed_at and row,
                         timeout=timeout, interval=0.05)


def seconds(start: dt.datetime, end: dt.datetime) -> float:
    return (end - start).total_seconds()


def uid_of(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def associate(node: NodeProcess, calling: str = "MODALITY") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    association = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
    assert association.is_established
    return association


def store(association: Association, files: list[Path]) -> None:
    for path in files:
        assert association.send_c_store(pydicom.dcmread(path)).Status == 0x0000


def stays_receiving(node: NodeProcess, series_uid: str, for_seconds: float) -> None:
    deadline = time.monotonic() + for_seconds
    while time.monotonic() < deadline:
        assert series_row(node, series_uid).state.value == "receiving"
        time.sleep(0.25)


def test_one_association_per_series_completes_seconds_after_release(default_node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 12)
    assert storescu(default_node.port, files, calling="CT_SCANNER").returncode == 0
    row = completed(default_node, uid_of(files))
    waited = seconds(row.last_received_at, row.completed_at)
    assert row.completed_by.value == "association" and row.reopen_count == 0
    assert SETTLE <= waited < SETTLE + 1.5, waited  # seconds, not the 60 s quiet period
    with default_node.database.session() as session:
        assert session.get(Study, row.study_uid).completed_at is not None


def test_sender_pausing_inside_its_association_is_waited_for(default_node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 8)
    association = associate(default_node)
    try:
        store(association, files[:4])
        stays_receiving(default_node, uid_of(files), 10)  # five settle times, the association still open
        store(association, files[4:])
    finally:
        association.release()
    row = completed(default_node, uid_of(files))
    assert (row.completed_by.value, row.instance_count, row.reopen_count) == ("association", 8, 0)


def test_two_associations_at_once_complete_after_both_are_released(default_node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 10)
    first, second = associate(default_node, "SENDER_A"), associate(default_node, "SENDER_B")
    try:
        for a, b in zip(files[0::2], files[1::2]):
            store(first, [a])
            store(second, [b])
        first.release()
        stays_receiving(default_node, uid_of(files), SETTLE + 2)
    finally:
        second.release()
    row = completed(default_node, uid_of(files))
    assert row.completed_by.value == "association" and row.instance_count == 10
    assert f"series {row.series_uid} complete: its 2 associations were released" in default_node.log()


def test_one_association_per_instance_waits_for_the_quiet_period(quiet_node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 5)
    for path in files:
        assert storescu(quiet_node.port, [path], calling="ONE_BY_ONE").returncode == 0
    row = completed(quiet_node, uid_of(files))
    assert (row.completed_by.value, row.instance_count, row.reopen_count) == ("quiet", 5, 0)  # never declared partial
    assert seconds(row.last_received_at, row.completed_at) >= LOWERED_QUIET


def test_aborted_association_gives_no_fast_completion(quiet_node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 6)
    association = associate(quiet_node)
    store(association, files[:3])
    association.abort()
    stays_receiving(quiet_node, uid_of(files), SETTLE + 1.5)
    row = completed(quiet_node, uid_of(files))
    assert (row.completed_by.value, row.instance_count) == ("quiet", 3)
    assert seconds(row.last_received_at, row.completed_at) >= LOWERED_QUIET
