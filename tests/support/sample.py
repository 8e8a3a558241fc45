"""The checked-in sample chest CT (sample_dicom/chest_ct), the phantom it is made from on other grids, and
the e2e node's pipelines that run on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from sample_dicom import generate

SAMPLE_DIR = Path(generate.__file__).resolve().parent / "chest_ct"
PIPELINES = ["ct-tissue", "ct-lungs"]
"""The built-in pipelines the end-to-end node runs on CT series."""


def phantom_series(grid: generate.Grid, series: str) -> tuple[list[Dataset], np.ndarray]:
    """Datasets of the phantom sampled on ``grid`` and the truth labels [k, j, i]."""
    datasets, labels = [], []
    for k, (hu, label, _) in enumerate(generate.slices(grid)):
        datasets.append(generate.ct_dataset(hu, grid, k, series=series))
        labels.append(label)
    return datasets, np.stack(labels)


def write_datasets(datasets: list[Dataset], folder: Path) -> list[Path]:
    """Write ``datasets`` into ``folder`` as 0000.dcm, 0001.dcm...; their paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(datasets):
        path = folder / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """The Dice overlap of two masks (1 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)
