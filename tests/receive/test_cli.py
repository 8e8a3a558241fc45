"""The receive commands of the CLI, run as the real `pacsnode` executable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import yaml

from node.db import Instance
from tests.support.dicom_factory import write_series
from tests.support.node_process import PACSNODE, NodeProcess

ISSUE_CONFIG = {
    "node": {"ae_title": "PACSNODE", "host": "0.0.0.0", "port": 11112, "storage_dir": "var/pacsnode",
             "allowed_calling_ae_titles": [], "series_quiet_seconds": 60, "max_associations": 25},
    "queue": {"broker_url": ""},
    "destinations": [{"name": "pacs", "ae_title": "ORTHANC", "host": "10.0.0.5", "port": 4242}],
    "routes": [{"name": "chest-ct", "match": {"Modality": "CT"}, "pipelines": ["ct-tissue"],
                "destinations": ["pacs"]}],
}


def pacsnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PACSNODE), *args], capture_output=True, text=True, timeout=120)


def test_config_check_accepts_the_documented_shape(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(ISSUE_CONFIG))
    result = pacsnode("config", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = {**ISSUE_CONFIG, "node": {**ISSUE_CONFIG["node"], "port": "eleven"}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = pacsnode("config", "check", str(path))
    assert result.returncode == 2
    assert "node.port" in result.stderr


def test_echo_send_and_status(node: NodeProcess, tmp_path: Path) -> None:
    assert pacsnode("echo", node.address).returncode == 0
    files = write_series(tmp_path / "series", 5)
    result = pacsnode("send", str(tmp_path / "series"), "--to", node.address, "--calling-ae", "CLI_SENDER")
    assert result.returncode == 0, result.stderr
    assert "5 of 5 stored" in result.stdout
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID
    with node.database.session() as session:
        assert session.get(Instance, uid).calling_ae_title == "CLI_SENDER"
    status = pacsnode("status", "--config", str(node.config_path))
    assert status.returncode == 0, status.stderr
    for title in ("Series", "Jobs", "Deliveries", "Recent errors"):
        assert title in status.stdout
    assert "receiving" in status.stdout or "unrouted" in status.stdout or "complete" in status.stdout


def test_echo_and_send_to_nothing_fail_clearly(tmp_path: Path) -> None:
    assert pacsnode("echo", "NOBODY@127.0.0.1:1", "--timeout", "2").returncode == 1
    write_series(tmp_path / "s", 1)
    result = pacsnode("send", str(tmp_path / "s"), "--to", "NOBODY@127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 1
    assert "0 of 1 stored" in result.stdout
    assert pacsnode("echo", "not-a-peer").returncode == 2
