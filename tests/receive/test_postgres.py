"""The index on PostgreSQL: the same store, idempotency and assembly as on SQLite; every instance acknowledged
before the server crashed is indexed once it is back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import select

from node.db import Instance, Series
from node.dicom.status import Status
from node.waiting import wait_until
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess
from tests.support.postgres import private_cluster, throwaway_database

pytestmark = pytest.mark.postgres

@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL server."""
    with throwaway_database("pacsnode_receive") as url:
        yield url


def test_store_resend_and_assemble_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    files = write_series(tmp_path / "in", 12)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    with NodeProcess(tmp_path / "node", database_url=postgres_url) as node:
        assert storescu(node.port, files).returncode == 0
        assert storescu(node.port, files[:4]).returncode == 0  # re-sent: no duplicates
        assert node.instance_count() == 12

        def series() -> Series:
            with node.database.session() as session:
                return session.get(Series, uid)

        assert series().calling_ae_title == "SCANNER"
        node.wait_for(lambda: series().state != "receiving", timeout=15)
        assert series().instance_count == 12
        assert "postgresql" in node.log()


class Sender:
    """Sends files with pynetdicom from ``threads`` associations at once, as fast as the node answers, opening a
    new association when one breaks; records the SOP Instance UIDs the node acknowledged with Success."""

    def __init__(self, port: int, files: list[Path], threads: int = 2) -> None:
        self.port = port
        self.datasets = [pydicom.dcmread(path) for path in files]
        self.acknowledged: set[str] = set()
        self.refused: dict[str, int] = {}  # UID -> status, or -1 when no answer came
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(self.datasets[n::threads],))
                         for n in range(threads)]

    def start(self) -> "Sender":
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self._threads), "a sender did not finish"

    def _send(self, datasets: list[pydicom.Dataset]) -> None:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
        assoc = None
        for ds in datasets:
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", self.port, ae_title="PACSNODE")
            answer = assoc.send_c_store(ds) if assoc.is_established else None
            status = int(answer.Status) if answer is not None and "Status" in answer else -1
            with self._lock:
                if status == Status.SUCCESS:
                    self.acknowledged.add(ds.SOPInstanceUID)
                else:
                    self.refused[ds.SOPInstanceUID] = status
        if assoc is not None and assoc.is_established:
            assoc.release()


def test_every_instance_acknowledged_before_postgres_crashed_is_indexed_after_it_restarts(tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 240)
    # The server's own default lets commits return before the disk (some hosts set it so): the node's commits
    # must wait all the same. Relying on the default, 6 of 80 acknowledged instances were lost in a trial.
    with (private_cluster(synchronous_commit="off") as cluster,
          NodeProcess(tmp_path / "node", database_url=cluster.url) as node):
        sender = Sender(node.port, files, threads=4).start()  # four associations: commits in flight at the crash
        wait_until(lambda: len(sender.acknowledged) >= 80, 30, "80 instances acknowledged", 0.005)
        cluster.crash()  # mid-ingest: the server dies without a shutdown checkpoint, as if killed
        acknowledged_at_crash = len(sender.acknowledged)
        sender.join()
        cluster.start(synchronous_commit="off")  # crash recovery replays the WAL

        with node.database.session() as session:
            indexed = set(session.scalars(select(Instance.sop_instance_uid)).all())
        lost = sender.acknowledged - indexed
        print(f"acknowledged {len(sender.acknowledged)} (by the crash {acknowledged_at_crash}), refused "
              f"{len(sender.refused)}, indexed after restart {len(indexed)}, acknowledged but not indexed {len(lost)}")
        assert sender.refused, "the crash came after the last instance: nothing was tested"
        assert set(sender.refused.values()) <= {Status.INDEX_FAILED, -1}, sender.refused
        assert not lost, f"{len(lost)} acknowledged instances are not in the index"
        # The background loops noticed the outage with one warning each, not one per tick.
        failing = [line for line in node.log().splitlines() if "background loop" in line and "is failing" in line]
        assert 0 < len(failing) <= 7, failing

        # The node uses the restarted server without a restart of its own: the refused instances are taken now.
        refused = [path for path, ds in zip(files, sender.datasets) if ds.SOPInstanceUID in sender.refused]
        assert storescu(node.port, refused).returncode == 0
        assert node.instance_count() == len(files)
