"""Fixtures of the receive tests: a real node and a synthetic series (DCMTK tools: tests/support/dcmtk.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node per test module, SQLite index, 2 s quiet period."""
    with NodeProcess(tmp_path_factory.mktemp("node")) as running:
        yield running


@pytest.fixture
def series_dir(tmp_path: Path) -> Path:
    """Ten 64x64 CT slices of a new series."""
    write_series(tmp_path / "series", 10)
    return tmp_path / "series"
