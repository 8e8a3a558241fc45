"""DICOM peers the tests talk to: DCMTK storescp, a pynetdicom storage SCP, and result files to send them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from node.ports import free_port, wait_for_port


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
        if self.process.poll() is not None:  # another process holds the port: fail rather than talk to it
            raise RuntimeError(f"storescp exited with {self.process.returncode} (port {self.port} taken?)")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def received(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


@dataclass
class ScpPeer:
    """A pynetdicom C-STORE SCP on 127.0.0.1; ``received`` holds (SOP class, SOP instance) of what it stored."""

    ae_title: str
    port: int
    received: list[tuple[str, str]] = field(default_factory=list)
    server: Any = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def start_scp_peer(ae_title: str, refused_classes: frozenset[str] = frozenset()) -> ScpPeer:
    """A peer that supports every storage SOP class but ``refused_classes`` (a PACS without SEG, say)."""
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax not in refused_classes:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    peer = ScpPeer(ae_title, free_port())

    def on_store(event: evt.Event) -> int:
        peer.received.append((str(event.request.AffectedSOPClassUID), str(event.request.AffectedSOPInstanceUID)))
        return 0x0000

    peer.server = ae.start_server(("127.0.0.1", peer.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return peer


def destination(name: str, peer: StoreSCP | ScpPeer, outputs: list[str] | None = None, **extra: Any) -> dict:
    """A ``destinations:`` entry for ``peer``."""
    entry = {"name": name, "ae_title": peer.ae_title, "host": "127.0.0.1", "port": peer.port, **extra}
    if outputs is not None:
        entry["outputs"] = outputs
    return entry


def result_copy(source: str | Path, directory: Path, sop_class: str | None = None) -> Path:
    """A copy of a DICOM file with a new SOP Instance UID (and optionally another SOP class)."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if sop_class:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
