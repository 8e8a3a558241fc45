"""End-to-end fixtures: Orthanc as the PACS, a real `pacsnode serve` (embedded queue) as the node."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.node_process import NodeProcess, free_port
from tests.support.orthanc import Orthanc, orthanc_available
from tests.support.sample import PIPELINES



def node_extra(
    orthanc: Orthanc, pipelines: list[str] = PIPELINES, outputs: tuple[str, ...] = ("seg", "sr"), **delivery: Any
) -> dict[str, Any]:
    """Node configuration: CT series go through ``pipelines``; their ``outputs`` go back to Orthanc."""
    return {
        "node": {"completion": {"quiet_seconds": 1}},
        "queue": {"embedded_worker": True, "reconcile_seconds": 1, "requeue_after_seconds": 5},
        "delivery": {"retry_initial_seconds": 0.5, "retry_max_seconds": 2, "connect_timeout": 2,
                     "requeue_after_seconds": 10, **delivery},
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port, "outputs": list(outputs)}],
        "routes": [{"name": "chest-ct", "match": {"Modality": "CT"}, "pipelines": pipelines, "destinations": ["pacs"]}],
    }


@pytest.fixture
def pacs_and_node(tmp_path: Path) -> Iterator[Callable[..., tuple[Orthanc, NodeProcess]]]:
    """Build (Orthanc, node) pairs that know each other; both are stopped after the test."""
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make setup`")
    started: list[Any] = []

    def make(
        pipelines: list[str] = PIPELINES, outputs: tuple[str, ...] = ("seg", "sr"), **delivery: Any
    ) -> tuple[Orthanc, NodeProcess]:
        node_port = free_port()
        orthanc = Orthanc(tmp_path / "orthanc", modalities={"node": ("PACSNODE", "127.0.0.1", node_port)})
        orthanc.directory.mkdir(parents=True, exist_ok=True)
        orthanc.start()
        started.append(orthanc)
        node = NodeProcess(tmp_path / "node", port=node_port, extra=node_extra(orthanc, pipelines, outputs, **delivery),
                           start_timeout=90)
        node.start()
        started.append(node)
        return orthanc, node

    yield make
    for peer in reversed(started):
        peer.stop()
