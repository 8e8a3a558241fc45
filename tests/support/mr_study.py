"""A synthetic brain-MR study of four series (T1c, T1, T2, FLAIR) in one frame of reference, each showing a
bright blob at its own place, for multi-series models (no PHI beyond fake names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

SEQUENCES = {"T1c": ("T1 MPRAGE post contrast", (-24.0, -24.0)), "T1": ("T1 MPRAGE", (-24.0, 24.0)),
             "T2": ("T2 TSE axial", (24.0, -24.0)), "FLAIR": ("T2 FLAIR axial", (24.0, 24.0))}
"""Name -> (SeriesDescription, (x, y) in mm of its blob's centre); every blob is centred at z = 0."""
BLOB_RADIUS_MM = 10.0
INPUTS = {"t1": {"SeriesDescription": "~(?i)^t1 (?!.*contrast)"}, "t1c": {"SeriesDescription": "~(?i)contrast"},
          "t2": {"SeriesDescription": "~(?i)^t2 tse"}, "flair": {"SeriesDescription": "~(?i)flair"}}
"""A study route's inputs that pick this study's four series by description (the BraTS model's channels)."""


@dataclass
class Geometry:
    """A series' grid: slices, rows, columns and spacing (mm); axial, centred on the patient origin."""

    shape: tuple[int, int, int] = (24, 48, 48)
    spacing: tuple[float, float, float] = (2.0, 2.0, 3.0)
    """Column, row, slice spacing."""

    def affine(self) -> np.ndarray:
        affine = np.diag([*self.spacing, 1.0])
        half = np.array([(self.shape[2] - 1) / 2, (self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2])
        affine[:3, 3] = -affine[:3, :3] @ half
        return affine


def blob_image(geometry: Geometry, centre_xy: tuple[float, float]) -> np.ndarray:
    """[k, j, i] intensities: 100 everywhere, 400 inside a sphere at (x, y, 0) mm."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    points = geometry.affine() @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    distance = np.linalg.norm(points[:3].T - np.array([*centre_xy, 0.0]), axis=1).reshape(geometry.shape)
    return np.where(distance <= BLOB_RADIUS_MM, 400.0, 100.0)


def mr_series(name: str, geometry: Geometry, *, study_uid: str, frame_uid: str, series_number: int) -> list[Dataset]:
    """One series of the study, its slices as MR Image Storage instances."""
    description, centre = SEQUENCES[name]
    image = blob_image(geometry, centre)
    affine, series_uid = geometry.affine(), generate_uid()
    datasets = []
    for index in range(geometry.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "MRACC01", "", "1"
        ds.Modality, ds.Manufacturer = "MR", "pacsnode-test"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Brain", "MR0001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PositionReferenceIndicator = ""
        ds.StudyDescription, ds.SeriesDescription = "Brain MR", description
        ds.SeriesNumber, ds.InstanceNumber = series_number, index + 1
        ds.BodyPartExamined = "BRAIN"
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "2000", "3", "1"
        ds.ImagePositionPatient = [float(v) for v in affine[:3, :3] @ [0, 0, index] + affine[:3, 3]]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [geometry.spacing[1], geometry.spacing[0]]
        ds.SliceThickness = geometry.spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = image[index].astype(np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def mr_study(geometries: dict[str, Geometry] | None = None) -> dict[str, list[Dataset]]:
    """The four series of one study (each on its own geometry where given), by sequence name."""
    study_uid, frame_uid = generate_uid(), generate_uid()
    geometries = geometries or {}
    return {name: mr_series(name, geometries.get(name, Geometry()), study_uid=study_uid, frame_uid=frame_uid,
                            series_number=number)
            for number, name in enumerate(SEQUENCES, start=1)}


def write_study(study: dict[str, list[Dataset]], folder: Path) -> dict[str, list[Path]]:
    """Write every series into its own folder; the paths by sequence name."""
    paths = {}
    for name, datasets in study.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        paths[name] = []
        for ds in datasets:
            path = folder / name / f"{ds.InstanceNumber:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths[name].append(path)
    return paths
