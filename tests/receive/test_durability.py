"""Durability: disk full answers Out of Resources without partial files; a restart resumes series."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from node.db import Series
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess, echo


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real file system that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_answers_out_of_resources_and_leaves_no_partial_file(tmp_path: Path, small_disk: Path) -> None:
    files = write_series(tmp_path / "in", 12, rows=256, columns=256)  # 128 KiB each, 1.5 MiB in all
    filler = small_disk / "filler"
    extra = {"node": {"storage_dir": str(small_disk / "storage"), "min_free_disk_mb": 0,  # the guard off: ENOSPC
                      "database_url": f"sqlite:///{tmp_path / 'index.db'}"}}
    with NodeProcess(tmp_path / "node", extra=extra) as node:
        filler.write_bytes(b"\0" * (2 * 1024 * 1024 + 512 * 1024))  # leave about 0.5 MiB
        result = storescu(node.port, files, extra=["-v"])
        assert result.returncode != 0
        assert "Refused: OutOfResources" in result.stderr, result.stderr
        stored = list((small_disk / "storage").rglob("*.dcm"))
        assert 0 < len(stored) < len(files)
        assert not [p for p in (small_disk / "storage").rglob("*") if p.is_file() and p.suffix != ".dcm"]
        for path in stored:  # every stored file is whole
            assert pydicom.dcmread(path).pixel_array.shape == (256, 256)
        assert node.instance_count() == len(stored)
        assert "out of disk space" in node.log()
        filler.unlink()
        assert echo(node.port)
        assert storescu(node.port, files).returncode == 0
        assert node.instance_count() == len(files)


def series_of(node: NodeProcess, uid: str) -> Series:
    with node.database.session() as session:
        return session.get(Series, uid)


def test_restarts_resume_a_half_received_series(tmp_path: Path) -> None:
    """Stopped in order, then killed, each time for longer than the quiet period: the series is resumed as
    receiving with a fresh quiet period each time, and completes once with every instance."""
    files = write_series(tmp_path / "in", 10)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    # The quiet period is longer than the node's start on a loaded machine, so the restart sees it running.
    node = NodeProcess(tmp_path / "node", extra={"node": {"completion": {"quiet_seconds": 12}}}).start()
    try:
        for part, end in ((files[:4], node.stop), (files[4:7], node.kill)):
            assert storescu(node.port, part).returncode == 0
            end()
            time.sleep(12.5)  # longer than the quiet period while the node is down
            node.start()
            assert series_of(node, uid).state == "receiving"  # resumed with a fresh quiet period
        assert storescu(node.port, files[7:]).returncode == 0
        node.wait_for(lambda: series_of(node, uid).state != "receiving", timeout=30)
        assert series_of(node, uid).instance_count == 10
        assert node.log().count("resuming: 1 series receiving") == 2
    finally:
        node.stop()
