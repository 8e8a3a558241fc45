"""Fixtures of the pipelines tests: the checked-in phantom and series built from it on other grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sample_dicom import generate
from tests.support.sample import SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_paths() -> list[Path]:
    """The checked-in sample series."""
    paths = sorted(SAMPLE_DIR.glob("CT_*.dcm"))
    assert len(paths) == generate.SAMPLE.shape[0], "sample_dicom/chest_ct is incomplete: run python -m sample_dicom.generate"
    return paths


@pytest.fixture(scope="session")
def sample_truth() -> dict[str, np.ndarray]:
    with np.load(SAMPLE_DIR / "ground_truth.npz") as data:
        return {key: data[key] for key in data.files}
