"""A second instance with a known SOP Instance UID, after its series was routed and its job ran, against a running
node: kept (the default), replaced with its series reopened and its job run again, or refused; an event records
it either way. DCMTK sends; pynetdicom where the test reads the status."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from node.db import NodeEvent, Series
from node.dicom.scu import send_objects
from node.dicom.status import Status
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess
from tests.support.pipelines import RUN_LOG_ENV

pytestmark = pytest.mark.timeout(180)


def _node(tmp_path: Path, policy: str | None) -> NodeProcess:
    extra = {
        "node": {"duplicate_instances": policy} if policy else {},
        "queue": {"embedded_worker": True},
        "pipelines": [{"name": "noop", "factory": "tests.support.pipelines:NoopPipeline"}],
        "routes": [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["noop"]}],
    }
    return NodeProcess(tmp_path / "node", extra=extra, env={RUN_LOG_ENV: str(tmp_path / "runs.log")},
                       start_timeout=90)


def _runs(tmp_path: Path) -> int:
    log = tmp_path / "runs.log"
    return log.read_text().count("done ") if log.exists() else 0


def _state(node: NodeProcess) -> str:
    [series] = node.series()
    return getattr(series.state, "value", series.state)


def _events(node: NodeProcess) -> list[str]:
    with node.database.session() as session:
        return list(session.scalars(select(NodeEvent.message).where(NodeEvent.kind == "instances_resent")))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _routed_after_one_run(node: NodeProcess, tmp_path: Path) -> tuple[list[Path], Path]:
    """Send a series, wait until it is routed and its job ran once; (files sent, stored path of the 3rd)."""
    files = write_series(tmp_path / "series", 5)
    assert storescu(node.port, files, calling="CT1").returncode == 0
    node.wait_for(lambda: _runs(tmp_path) == 1 and _state(node) == "routed", timeout=60)
    uid = pydicom.dcmread(files[2], stop_before_pixels=True).SOPInstanceUID
    [stored] = node.storage_dir.rglob(f"{uid}.dcm")
    return files, stored


def _changed_copy(path: Path, target: Path) -> Path:
    """The same instance (same SOP Instance UID) with other pixel values: a corrected re-send."""
    ds = pydicom.dcmread(path)
    ds.PixelData = bytes(255 - b for b in ds.PixelData)
    ds.save_as(target, enforce_file_format=True)
    return target


def test_keep_is_the_default_and_is_recorded(tmp_path: Path) -> None:
    with _node(tmp_path, None) as node:
        files, stored = _routed_after_one_run(node, tmp_path)
        before = _digest(stored)
        again = storescu(node.port, [_changed_copy(files[2], tmp_path / "changed.dcm")], calling="CT1")
        assert again.returncode == 0, again.stderr
        assert _digest(stored) == before and _state(node) == "routed"  # nothing reopened
        [event] = node.wait_for(lambda: _events(node), timeout=10)
        assert "kept the stored copies" in event and "(0 identical" in event and "CT1@127.0.0.1" in event
        assert [s.instance_count for s in node.series()] == [5] and _runs(tmp_path) == 1


def test_replace_reopens_the_series_and_its_job_runs_again(tmp_path: Path) -> None:
    with _node(tmp_path, "replace") as node:
        files, stored = _routed_after_one_run(node, tmp_path)
        changed = _changed_copy(files[2], tmp_path / "changed.dcm")
        assert storescu(node.port, [changed], calling="CT1").returncode == 0
        assert stored.read_bytes().endswith(pydicom.dcmread(changed).PixelData)
        node.wait_for(lambda: _runs(tmp_path) == 2 and _state(node) == "routed", timeout=60)
        assert any("replaced the stored copies and reopened the series" in e for e in _events(node))
        # The same corrected copy once more (a sender retrying): identical, so nothing reopens.
        assert storescu(node.port, [changed], calling="CT1").returncode == 0
        assert _state(node) == "routed"
        node.wait_for(lambda: any("(1 identical" in e for e in _events(node)), timeout=10)
        with node.database.session() as session:
            assert [s.instance_count for s in session.scalars(select(Series))] == [5]


def test_refuse_answers_duplicate_sop_instance(tmp_path: Path) -> None:
    with _node(tmp_path, "refuse") as node:
        files, stored = _routed_after_one_run(node, tmp_path)
        before = _digest(stored)
        changed = _changed_copy(files[2], tmp_path / "changed.dcm")
        [outcome] = send_objects([changed], "PACSNODE", "127.0.0.1", node.port, calling_ae_title="CT1")
        assert outcome.status == Status.DUPLICATE_SOP_INSTANCE
        assert _digest(stored) == before and _state(node) == "routed"
        [event] = node.wait_for(lambda: _events(node), timeout=10)
        assert "refused them (0x0111 Duplicate SOP Instance)" in event
