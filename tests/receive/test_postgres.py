"""The index on PostgreSQL: the same store, idempotency and assembly as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from node.db import Series
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess
from tests.support.postgres import throwaway_database

pytestmark = pytest.mark.postgres

@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL server."""
    with throwaway_database("pacsnode_receive") as url:
        yield url


def test_store_resend_and_assemble_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    files = write_series(tmp_path / "in", 12)
    uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    with NodeProcess(tmp_path / "node", database_url=postgres_url) as node:
        assert storescu(node.port, files).returncode == 0
        assert storescu(node.port, files[:4]).returncode == 0  # re-sent: no duplicates
        assert node.instance_count() == 12

        def series() -> Series:
            with node.database.session() as session:
                return session.get(Series, uid)

        assert series().calling_ae_title == "SCANNER"
        node.wait_for(lambda: series().state != "receiving", timeout=15)
        assert series().instance_count == 12
        assert "postgresql" in node.log()
