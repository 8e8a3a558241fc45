"""Fixtures of the pipelines tests: the checked-in phantom and series built from it on other grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from sample_dicom import generate

SAMPLE_DIR = Path(generate.__file__).resolve().parent / "chest_ct"


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


def phantom_series(grid: generate.Grid, series: str) -> tuple[list[Dataset], np.ndarray]:
    """Datasets of the phantom sampled on ``grid`` and the truth labels [k, j, i]."""
    datasets, labels = [], []
    for k, (hu, label, _) in enumerate(generate.slices(grid)):
        datasets.append(generate.ct_dataset(hu, grid, k, series=series))
        labels.append(label)
    return datasets, np.stack(labels)


def write(datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)
