"""Fixtures every test folder may use: nodes driven in-process (tests/support/node_harness.py) and real peers
on loopback (DCMTK storescp, pynetdicom SCPs, Orthanc)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from node.deliver.outputs import SEG_SOP_CLASSES
from node.ports import free_port
from tests.support.node_harness import Node, delivery_config
from tests.support.orthanc import Orthanc, running_orthanc
from tests.support.peers import ScpPeer, StoreSCP, start_scp_peer


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Build nodes, each in its own folder; all are shut down at the end of the test.

    ``make_node(config)`` takes a whole configuration (see ``base_config``); ``make_node(destinations=[...],
    **extra)`` a delivery configuration (``delivery_config``) storing under the node's folder.
    """
    nodes: list[Node] = []

    def make(config: dict[str, Any] | None = None, *, destinations: list[dict] | None = None, **extra: Any) -> Node:
        root = tmp_path / f"node{len(nodes)}"
        root.mkdir()
        if config is None:
            config = delivery_config(root / "var", destinations or [], **extra)
        elif destinations is not None or extra:
            raise TypeError("make_node takes a config, or destinations and extra delivery settings, not both")
        node = Node(root, config)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


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
