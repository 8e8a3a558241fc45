"""Fixtures of the results tests: volumes loaded by the real loader from series of tests/support/results.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.settings import ResultOptions
from pipelines.types import Volume
from pipelines.volume import load_series
from tests.support.results import seg_sr_options, write_ct_series


@pytest.fixture
def series_volume(tmp_path: Path) -> Callable[..., Volume]:
    """Build a volume with the real loader from a series written with the given geometry."""
    counter = iter(range(1000))

    def build(**kwargs: object) -> Volume:
        return load_series(write_ct_series(tmp_path / f"series{next(counter)}", **kwargs))  # type: ignore[arg-type]

    return build


@pytest.fixture
def options() -> ResultOptions:
    return seg_sr_options()
