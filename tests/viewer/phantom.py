"""A small synthetic CT whose geometry makes misplacement visible, and the project's SEG of its target square.

Each slice is soft tissue (40 HU) with two bright squares (400 HU): the *target* (rows/columns near the image's
first corner, on slices ``TARGET_SLICES`` only) and the *decoy* (near the opposite corner, on every slice). The
segment covers the target square only, so an overlay that is flipped, shifted or on the wrong slice lands on the
decoy or on plain tissue, which a screenshot shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pipelines.settings import ResultOptions
from pipelines.results import write_results
from pipelines.types import Code, PipelineResult, Segment, Volume
from pipelines.volume import load_datasets
from tests.support.dicom_factory import ct_slice

ROWS = COLUMNS = 128
SLICES = 24
TARGET_SLICES = range(8, 16)
TARGET = (slice(24, 52), slice(24, 52))  # rows, columns
DECOY = (slice(76, 104), slice(76, 104))
SPACING = 1.5
SLICE_STEP = 3.0
TISSUE = Code("85756007", "SCT", "Tissue")
AI = Code("123110", "DCM", "Artificial Intelligence")
PHANTOM_HEADER = {
    "PatientName": "Phantom^Viewer", "PatientID": "PHANTOM-1", "PatientBirthDate": "19700101", "PatientSex": "O",
    "StudyDate": "20240101", "SeriesDate": "20240101", "ContentDate": "20240101",
    "StudyTime": "120000", "SeriesTime": "120000", "ContentTime": "120000",
    "StudyID": "1", "AccessionNumber": "ACC1", "ReferringPhysicianName": "", "Manufacturer": "pacsnode",
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "PositionReferenceIndicator": "", "KVP": 120,
    "BodyPartExamined": "CHEST", "WindowCenter": 220, "WindowWidth": 600,
}


@dataclass
class PhantomSeries:
    """The CT datasets (sorted by instance number) and the segment mask in the same order."""

    datasets: list[Dataset]
    mask: np.ndarray  # (slices, rows, columns) bool
    orientation: list[float]
    description: str

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)


def make_ct(
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    reverse_order: bool = False,
    study_uid: str | None = None,
    description: str = "pacsnode viewer phantom",
) -> PhantomSeries:
    """A CT series on the given orientation; ``reverse_order`` numbers instances against the slice normal."""
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    row_dir, col_dir = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-96.0, -96.0, -40.0])
    datasets, masks = [], []
    for k in range(SLICES):
        hu = np.full((ROWS, COLUMNS), 40, np.int16)
        hu[DECOY] = 400
        mask = np.zeros((ROWS, COLUMNS), bool)
        if k in TARGET_SLICES:
            hu[TARGET] = 400
            mask[TARGET] = True
        position = origin + normal * SLICE_STEP * k
        number = SLICES - k if reverse_order else k + 1
        datasets.append(_ct_slice(hu, position, orientation, number, study_uid, series_uid, frame_uid, description))
        masks.append(mask)
    order = sorted(range(SLICES), key=lambda i: int(datasets[i].InstanceNumber))
    return PhantomSeries(
        [datasets[i] for i in order], np.stack([masks[i] for i in order]), list(orientation), description
    )


def _ct_slice(
    hu: np.ndarray,
    position: np.ndarray,
    orientation: tuple[float, ...],
    number: int,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    description: str,
) -> Dataset:
    return ct_slice(
        study_uid, series_uid, number - 1, pixels=hu, position=[round(float(v), 4) for v in position],
        orientation=[float(v) for v in orientation], pixel_spacing=(SPACING, SPACING), slice_thickness=SLICE_STEP,
        frame_of_reference_uid=frame_uid, SeriesDescription=description, **PHANTOM_HEADER,
    )


def write_series(series: PhantomSeries, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in series.datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def phantom_result(volume: Volume, misplaced: bool = False) -> PipelineResult:
    """The target square as one segment on ``volume``'s grid (or, ``misplaced``, drawn on the decoy)."""
    mask = volume.array >= 300
    mask[:, DECOY[0], DECOY[1]] = False
    if misplaced:
        mask = mask[:, ::-1, ::-1].copy()
    segment = Segment(1, "target", TISSUE, TISSUE, mask)
    return PipelineResult("viewer-phantom", "1.0", AI, segments=[segment])


def write_seg(
    series: PhantomSeries, folder: Path, *, omit_empty_frames: bool, misplaced: bool = False, volume: Volume | None = None
) -> Path:
    """The project's BINARY SEG of the target square (``write_results``), written under ``folder``.

    Pass ``volume`` when the series was loaded already: loading keeps only the headers of its datasets.
    """
    volume = volume or load_datasets(series.datasets)
    options = ResultOptions(omit_empty_frames=omit_empty_frames, fallback_key_slices=0)
    written = write_results(volume, phantom_result(volume, misplaced), options, job_key=str(folder), out_dir=folder)
    return next(w.path for w in written if w.kind == "seg")
