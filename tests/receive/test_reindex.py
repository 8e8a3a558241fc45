"""Stored files the index does not know (a crash between the file and its index row) are re-indexed at start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete

from node.db import Instance, Series, Study
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess


def test_serve_reindexes_files_missing_from_the_index(tmp_path: Path) -> None:
    files = write_series(tmp_path / "in", 6)
    node = NodeProcess(tmp_path / "node").start()
    try:
        assert storescu(node.port, files).returncode == 0
        node.stop()
        with node.database.session() as session:  # the index loses its newest rows
            session.execute(delete(Instance))
            session.execute(delete(Series))
            session.execute(delete(Study))
        node.start()
        assert node.instance_count() == 6
        (series,) = node.series()
        assert series.instance_count == 6 and series.calling_ae_title == "SCANNER"
        assert "re-indexed 6 stored instance(s)" in node.log()
    finally:
        node.stop()
