"""Fixtures every test folder may use: real peers on loopback (DCMTK storescp, pynetdicom SCPs, Orthanc)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from node.deliver.outputs import SEG_SOP_CLASSES
from node.ports import free_port
from tests.support.orthanc import Orthanc, running_orthanc
from tests.support.peers import ScpPeer, StoreSCP, start_scp_peer


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    """DCMTK storescp on a free port, storing into ``tmp_path/storescp``."""
    if shutil.which("storescp") is None:
        pytest.fail("DCMTK storescp is not installed: run `make setup`")
    directory = tmp_path / "storescp"
    directory.mkdir()
    peer = StoreSCP("STORESCP", free_port(), directory)
    peer.start()
    yield peer
    peer.stop()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc as the PACS, on free ports."""
    with running_orthanc(tmp_path / "orthanc") as peer:
        yield peer


@pytest.fixture
def seg_less_peer() -> Iterator[ScpPeer]:
    """A destination that supports every storage SOP class except SEG (a PACS viewer without SEG)."""
    peer = start_scp_peer("NOSEG", refused_classes=SEG_SOP_CLASSES)
    yield peer
    peer.stop()


@pytest.fixture
def full_peer() -> Iterator[ScpPeer]:
    """A destination that supports every storage SOP class."""
    peer = start_scp_peer("ALLSEG")
    yield peer
    peer.stop()


@pytest.fixture
def ct_files() -> list[str]:
    """pydicom's small CT and MR test files."""
    return [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a real file system whose free space the test controls."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    assert result.returncode == 0, f"cannot mount a tmpfs (needs root): {result.stderr.decode().strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
