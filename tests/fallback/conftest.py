"""Fixtures for the fallback tests: a node (config + index), a SEG-less pynetdicom peer, result files on disk."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, ALL_TRANSFER_SYNTAXES, evt

from pipelines.settings import ResultOptions
from node.deliver.outputs import SEG_SOP_CLASSES
from pipelines.results.fallback import build_fallback
from pipelines.types import Code, PipelineResult, Segment
from pipelines.volume import load_datasets
from tests.delivery.conftest import DeliveryNode, free_port, node_config
from tests.viewer.phantom import make_ct, write_seg

TISSUE = Code("85756007", "SCT", "Tissue")
AI = Code("123110", "DCM", "Artificial Intelligence")


@dataclass
class Peer:
    """A C-STORE SCP on 127.0.0.1; ``received`` holds (SOP class, SOP instance) of what it stored."""

    ae_title: str
    port: int
    received: list[tuple[str, str]] = field(default_factory=list)


def _start_peer(accept_seg: bool) -> tuple[Peer, object]:
    ae = AE(ae_title="NOSEG" if not accept_seg else "ALLSEG")
    for context in AllStoragePresentationContexts:
        if accept_seg or context.abstract_syntax not in SEG_SOP_CLASSES:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    peer = Peer(ae.ae_title, free_port())

    def on_store(event: evt.Event) -> int:
        peer.received.append((str(event.request.AffectedSOPClassUID), str(event.request.AffectedSOPInstanceUID)))
        return 0x0000

    server = ae.start_server(("127.0.0.1", peer.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    return peer, server


@pytest.fixture
def seg_less_peer() -> Iterator[Peer]:
    """A destination that supports every storage SOP class except SEG (a PACS viewer without SEG)."""
    peer, server = _start_peer(accept_seg=False)
    yield peer
    server.shutdown()  # type: ignore[attr-defined]


@pytest.fixture
def full_peer() -> Iterator[Peer]:
    peer, server = _start_peer(accept_seg=True)
    yield peer
    server.shutdown()  # type: ignore[attr-defined]


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator:
    nodes: list[DeliveryNode] = []

    def make(destinations: list[dict]) -> DeliveryNode:
        root = tmp_path / f"node{len(nodes)}"
        root.mkdir()
        node = DeliveryNode(root, node_config(root / "var", destinations))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


@pytest.fixture
def result_files(tmp_path: Path) -> Iterator:
    """A factory: writes a job's SEG and fallback images for a fresh phantom; returns {kind: path}."""
    count = 0

    def make() -> dict[str, Path]:
        nonlocal count
        count += 1
        folder = tmp_path / f"results{count}"
        folder.mkdir()
        series = make_ct()
        volume = load_datasets(series.datasets)
        mask = volume.array >= 300
        mask[:, 76:, 76:] = False
        result = PipelineResult("test", "1", AI, segments=[Segment(1, "target", TISSUE, TISSUE, mask)])
        files = {"seg": write_seg(series, folder / "seg", omit_empty_frames=True, volume=volume)}
        for number, image in enumerate(build_fallback(volume, result, ResultOptions(), job_key=str(folder)), 1):
            files[f"fallback-{number}"] = folder / f"fallback-{number}.dcm"
            image.save_as(files[f"fallback-{number}"], enforce_file_format=True)
        return files

    return make


def destination(name: str, peer: Peer, outputs: list[str]) -> dict:
    return {"name": name, "ae_title": peer.ae_title, "host": "127.0.0.1", "port": peer.port, "outputs": outputs}
