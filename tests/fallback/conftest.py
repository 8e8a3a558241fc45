"""Fixtures for the fallback tests: result files on disk (nodes and peers: tests/support/fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.settings import ResultOptions
from pipelines.results.fallback import build_fallback
from pipelines.types import Code, PipelineResult, Segment
from pipelines.volume import load_datasets
from tests.viewer.phantom import make_ct, write_seg

TISSUE = Code("85756007", "SCT", "Tissue")
AI = Code("123110", "DCM", "Artificial Intelligence")


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
