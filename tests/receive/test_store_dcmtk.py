"""Storing with DCMTK peers: what was sent is what was stored, durably indexed, idempotent."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from sqlalchemy import select

from node.db import Instance, Series
from tests.support.dcmtk import echoscu, storescu
from tests.support.dicom_factory import dataset_bytes_after_meta, inflate, write_series
from tests.support.node_process import NodeProcess


# storescu proposes uncompressed syntaxes only unless told otherwise
STORESCU_PROPOSE = {DeflatedExplicitVRLittleEndian: ["-xd"], RLELossless: ["-xr"], JPEGLSLossless: ["-xt"],
                    JPEG2000Lossless: ["-xv"]}


def stored_path(node: NodeProcess, source: Path) -> Path:
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    return node.storage_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def test_echoscu_is_answered(node: NodeProcess) -> None:
    result = echoscu(node.port)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEGLSLossless,
     JPEG2000Lossless],
    ids=lambda s: pydicom.uid.UID(s).keyword,
)
def test_stored_bytes_equal_sent_bytes(node: NodeProcess, tmp_path: Path, syntax: str) -> None:
    files = write_series(tmp_path / "in", 3, syntax=syntax)
    deflated = syntax == DeflatedExplicitVRLittleEndian
    result = storescu(node.port, files, extra=STORESCU_PROPOSE.get(syntax, []))
    assert result.returncode == 0, result.stderr
    for source in files:
        stored = stored_path(node, source)
        if deflated:  # storescu deflates again on sending; the inflated dataset must be identical
            assert inflate(dataset_bytes_after_meta(stored)) == inflate(dataset_bytes_after_meta(source))
        else:
            assert dataset_bytes_after_meta(stored) == dataset_bytes_after_meta(source)
        meta = pydicom.dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == syntax
        assert meta.SourceApplicationEntityTitle == "SCANNER"
    with node.database.session() as session:
        rows = session.scalars(
            select(Instance).where(Instance.path.in_([str(stored_path(node, f)) for f in files]))
        ).all()
        assert {row.transfer_syntax_uid for row in rows} == {syntax}
        assert len(rows) == 3


def test_series_row_records_sender_and_completes(node: NodeProcess, series_dir: Path) -> None:
    files = sorted(series_dir.iterdir())
    assert storescu(node.port, files, calling="CT_SCANNER_1").returncode == 0
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID

    def row() -> Series | None:
        with node.database.session() as session:
            return session.get(Series, series_uid)

    first = row()
    assert first is not None and first.instance_count == 10 and first.modality == "CT"
    assert (first.calling_ae_title, first.called_ae_title, first.calling_host) == ("CT_SCANNER_1", "PACSNODE",
                                                                                  "127.0.0.1")
    done = node.wait_for(lambda: (r := row()) is not None and r.state != "receiving" and r, timeout=15)
    assert done.completed_at is not None


def test_resent_instances_are_idempotent(node: NodeProcess, series_dir: Path) -> None:
    files = sorted(series_dir.iterdir())
    before = node.instance_count()
    assert storescu(node.port, files).returncode == 0
    assert storescu(node.port, files).returncode == 0
    assert node.instance_count() == before + len(files)
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    with node.database.session() as session:
        assert session.get(Series, series_uid).instance_count == len(files)


def test_late_instance_reopens_complete_series(node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 4)
    assert storescu(node.port, files[:3]).returncode == 0
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID

    def state() -> str:
        with node.database.session() as session:
            return session.get(Series, series_uid).state

    done = ("routed", "unrouted")  # the dispatcher routes complete series at once (no routes here: unrouted)
    node.wait_for(lambda: state() in done, timeout=15)
    assert storescu(node.port, files[3:]).returncode == 0
    assert state() == "receiving"
    node.wait_for(lambda: state() in done, timeout=15)
    with node.database.session() as session:
        assert session.get(Series, series_uid).instance_count == 4


def test_four_concurrent_associations(node: NodeProcess, tmp_path: Path) -> None:
    batches = [write_series(tmp_path / f"in{i}", 15) for i in range(4)]
    before = node.instance_count()
    results: list[int] = []
    threads = [threading.Thread(target=lambda b=b: results.append(storescu(node.port, b).returncode)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [0, 0, 0, 0]
    assert node.instance_count() == before + 60
    for batch in batches:
        for source in batch:
            assert dataset_bytes_after_meta(stored_path(node, source)) == dataset_bytes_after_meta(source)
    assert "4 concurrent" not in node.log()  # no association was refused
    assert "rejected association" not in node.log()
