"""A disk that fills up while a sender is in mid-association, against a running node on a small real file system
(a 64 MiB tmpfs): instances are refused with 0xA700 on the association in progress, nothing partial is left, the
job waits for space without using up its attempts, and everything carries on without a restart once space is
freed. And the guard is on by default."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import select

from node.db import Job, JobState
from node.dicom.status import Status
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess, echo

pytestmark = pytest.mark.timeout(180)

MB = 1024 * 1024
THRESHOLD_MB = 24  # scaled to the 64 MiB disk; results wait below 12 MB


def _fill(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        handle.write(b"\xff" * size)


def _fill_to_the_brim(path: Path) -> None:
    """Write until the file system has no byte left."""
    with open(path, "wb", buffering=0) as handle:
        chunk = b"\xff" * 65536
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                handle.write(b"\xff" * 512)
        except OSError:
            pass


def _job(node: NodeProcess) -> Job | None:
    with node.database.session() as session:
        return session.scalars(select(Job)).first()


def test_a_disk_filling_up_mid_association(tmp_path: Path, small_disk: Path) -> None:
    extra = {
        "node": {"storage_dir": str(small_disk / "storage"), "min_free_disk_mb": THRESHOLD_MB},
        "queue": {"embedded_worker": True},
        "pipelines": [{"name": "threshold", "factory": "tests.support.pipelines:ThresholdPipeline"}],
        "routes": [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["threshold"]}],
    }
    study_uid = "1.2.826.0.1.3680043.8.498.18"  # short: the factory derives one frame of reference from it
    files = write_series(tmp_path / "series", 10, rows=128, columns=128, study_uid=study_uid)
    syntax = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    with NodeProcess(tmp_path / "node", extra=extra, start_timeout=90) as node:
        ae = AE(ae_title="CT1")
        ae.add_requested_context(pydicom.dcmread(files[0], stop_before_pixels=True).SOPClassUID, syntax)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert assoc.is_established
        assert [assoc.send_c_store(f).Status for f in files[:4]] == [0] * 4
        _fill(small_disk / "filler", shutil.disk_usage(small_disk).free - 8 * MB)  # below the guard and its half
        assert assoc.send_c_store(files[4]).Status == Status.OUT_OF_RESOURCES  # the association in progress
        _fill_to_the_brim(small_disk / "brim")
        assert assoc.send_c_store(files[5]).Status == Status.OUT_OF_RESOURCES
        (small_disk / "brim").unlink()  # the reserve is back; still below the guard
        assoc.release()
        assert len(list((small_disk / "storage").rglob("*.dcm"))) == 4
        assert not list(small_disk.rglob("*.partial"))
        assert "disk guard active" in node.log()

        waiting = node.wait_for(lambda: (job := _job(node)) and job.state == JobState.retrying and job, timeout=60)
        assert "waiting for disk space" in (waiting.reason or "") and waiting.attempts == 0
        leftover = small_disk / "storage" / "results" / str(waiting.id) / ".seg.dcm.4242.feedbeef.partial"
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"an earlier attempt killed mid-write")

        (small_disk / "filler").unlink()  # space is freed: no restart
        done = node.wait_for(lambda: (job := _job(node)) and job.state == JobState.succeeded and job, timeout=60)
        assert done.attempts == 1
        assert not leftover.exists()
        assert len(list((small_disk / "storage" / "results" / str(done.id)).glob("*.dcm"))) == 2  # SEG and SR
        assoc = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
        assert [assoc.send_c_store(f).Status for f in files[4:]] == [0] * 6
        assoc.release()


def test_the_disk_guard_is_on_by_default(tmp_path: Path, small_disk: Path) -> None:
    """With the default threshold (1024 MB) a 64 MiB disk is already too full: the node starts, and refuses
    every association (so it never answers the C-ECHO its start waits for), saying why."""
    node = NodeProcess(tmp_path / "node", extra={"node": {"storage_dir": str(small_disk / "storage")}})
    assert node.settings.node.min_free_disk_mb == 1024
    node.launch()
    try:
        node.wait_for(lambda: "pacsnode serving" in node.log(), timeout=60)
        assert not echo(node.port)
        node.wait_for(lambda: "disk guard active" in node.log(), timeout=10)
        assert "node.min_free_disk_mb=1024" in node.log()
    finally:
        node.stop()
