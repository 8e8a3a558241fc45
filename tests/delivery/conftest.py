"""Fixtures for delivery tests: real DCMTK storescp and Orthanc peers on loopback, small real DICOM files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.support.orthanc import Orthanc, running_orthanc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class StoreSCP:
    """A DCMTK storescp writing what it receives into ``directory``."""

    ae_title: str
    port: int
    directory: Path
    process: subprocess.Popen | None = None

    def start(self, *extra: str) -> None:
        env = dict(os.environ, TCP_NODELAY="1")
        self.process = subprocess.Popen(
            ["storescp", "-aet", self.ae_title, "-od", str(self.directory), *extra, str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def received(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
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
    with running_orthanc(tmp_path / "orthanc") as peer:
        yield peer


@pytest.fixture
def ct_files() -> list[str]:
    return [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
