"""A local receiving PACS on loopback (Orthanc) for the demo, the benchmark and the tests.

Orthanc listens on all interfaces (it cannot bind one address); everything here talks to 127.0.0.1 only.
Each start waits for C-ECHO to answer; each stop waits for both ports to be free again, so a restart on the
same ports (to simulate a PACS outage) works.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from node.ports import free_port as _free_port
from node.dicom.echo import c_echo

log = logging.getLogger(__name__)

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_available() -> bool:
    return Path(ORTHANC_BINARY).exists() or shutil.which("Orthanc") is not None



def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


@dataclass
class Orthanc:
    """One Orthanc process with its own storage; ``modalities`` maps names to (AE title, host, port)."""

    directory: Path
    ae_title: str = "ORTHANC"
    http_port: int = field(default_factory=_free_port)
    dicom_port: int = field(default_factory=_free_port)
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    dicomweb: bool = False
    overwrite_instances: bool = False  # replace a stored instance re-sent with the same SOP Instance UID
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def _write_config(self) -> Path:
        storage = self.directory / "db"
        storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "Name": "pacsnode-local-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {name: [ae, host, port] for name, (ae, host, port) in self.modalities.items()},
            "StableAge": 1,
            "OverwriteInstances": self.overwrite_instances,
            # DCMTK's largest PDU instead of Orthanc's 16 KiB default: a 40 MB SEG in 300 PDUs, not 2,400
            "MaximumPduLength": 131072,
        }
        if self.dicomweb:
            if not DICOMWEB_PLUGIN.exists():
                raise RuntimeError(f"Orthanc's DICOMweb plugin is missing ({DICOMWEB_PLUGIN}): run `make setup`")
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        return path

    def start(self, timeout: float = 20.0) -> None:
        """Launch Orthanc and wait until it answers C-ECHO and HTTP."""
        if not orthanc_available():
            raise RuntimeError("Orthanc is not installed (Debian package `orthanc`): run `make setup`")
        self.wait_ports_free()
        config = self._write_config()
        log_file = open(self.directory / "orthanc.log", "ab")
        self.process = subprocess.Popen(
            [ORTHANC_BINARY if Path(ORTHANC_BINARY).exists() else "Orthanc", str(config)],
            env=dict(os.environ, TCP_NODELAY="1"), stdout=log_file, stderr=subprocess.STDOUT,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.directory / 'orthanc.log'}")
            if self.echo() and self._http_ready():
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"Orthanc did not answer within {timeout} s; see {self.directory / 'orthanc.log'}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Orthanc and wait until its ports are free."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
        self.wait_ports_free(timeout)

    def wait_ports_free(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while _port_in_use(self.http_port) or _port_in_use(self.dicom_port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ports {self.http_port}/{self.dicom_port} still busy after {timeout} s")
            time.sleep(0.1)

    def echo(self) -> bool:
        return c_echo("127.0.0.1", self.dicom_port, self.ae_title, calling_ae_title="PACSNODE-ECHO").ok

    def _http_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/system", timeout=2).ok
        except requests.RequestException:
            return False

    # REST helpers -------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        response = requests.get(f"{self.url}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def upload(self, paths: list[Path]) -> list[str]:
        """POST each file to /instances; returns Orthanc's instance IDs."""
        ids = []
        with requests.Session() as http:
            for path in paths:
                response = http.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
                response.raise_for_status()
                ids.append(response.json()["ID"])
        return ids

    def send_to_modality(self, modality: str, resources: list[str], timeout: float = 120) -> dict:
        """Make Orthanc C-STORE ``resources`` (Orthanc IDs) to a configured modality, synchronously."""
        response = requests.post(
            f"{self.url}/modalities/{modality}/store", json={"Resources": resources, "Synchronous": True}, timeout=timeout
        )
        response.raise_for_status()
        return response.json()

    def study_id(self, study_uid: str) -> str | None:
        response = requests.post(f"{self.url}/tools/lookup", data=study_uid, timeout=30)
        response.raise_for_status()
        for match in response.json():
            if match["Type"] == "Study":
                return match["ID"]
        return None

    def series_of_study(self, study_uid: str) -> list[dict]:
        """Every series Orthanc holds for the study (with MainDicomTags and Instances)."""
        study = self.study_id(study_uid)
        return [] if study is None else self.get(f"/studies/{study}/series")

    def instances(self) -> list[str]:
        return self.get("/instances")

    def instance_file(self, instance_id: str) -> bytes:
        response = requests.get(f"{self.url}/instances/{instance_id}/file", timeout=60)
        response.raise_for_status()
        return response.content

    def instance_tags(self, instance_id: str) -> dict:
        return self.get(f"/instances/{instance_id}/simplified-tags")


@contextmanager
def running_orthanc(directory: Path, **kwargs: Any) -> Iterator[Orthanc]:
    """An Orthanc started for the block and always stopped after it."""
    directory.mkdir(parents=True, exist_ok=True)
    peer = Orthanc(directory, **kwargs)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
