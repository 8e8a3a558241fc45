"""Synthetic CT instances and series for tests and benchmarks (no PHI beyond fake names).

Every file is written with ``enforce_file_format=True`` (preamble and file meta), so DCMTK reads it.
Compressed variants are made with pydicom's encoders (RLE, JPEG-LS, JPEG 2000) or ``encapsulate``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    UID,
    generate_uid,
)

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
COMPRESSED = [RLELossless, JPEGLSLossless, JPEG2000Lossless]


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ct_slice(
    study_uid: str,
    series_uid: str,
    index: int,
    *,
    rows: int = 64,
    columns: int = 64,
    sop_instance_uid: str | None = None,
    seed: int | None = None,
    pixels: np.ndarray | None = None,
    rescale_intercept: float = 0,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    slice_thickness: float = 1.25,
    frame_of_reference_uid: str | None = None,
    **attributes: Any,
) -> Dataset:
    """One CT slice of a series, explicit VR little endian: the one synthetic CT maker of the tests.

    ``pixels`` are the stored int16 values (default: noise from ``seed``, or ``index``, of ``rows`` x
    ``columns``), shown as ``stored + rescale_intercept`` HU. ``position`` defaults to ``index`` slices along
    the normal of an axial plane; the frame of reference defaults to one derived from the study UID.
    ``attributes`` set (or, given None, delete) any other keyword last.
    """
    if pixels is None:
        rng = np.random.default_rng(index if seed is None else seed)
        pixels = (rng.integers(-1000, 1500, size=(rows, columns))).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate = "20260101"
    ds.Modality = "CT"
    ds.AccessionNumber = "ACC0001"
    ds.Manufacturer = "pacsnode-test"
    ds.PatientName = "Test^Synthetic"
    ds.PatientID = "SYN0001"
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid(entropy_srcs=[study_uid, "frame of reference"])
    ds.ImagePositionPatient = list(position) if position is not None else [0.0, 0.0, float(index) * slice_thickness]
    ds.ImageOrientationPatient = list(orientation)
    ds.SliceThickness = slice_thickness
    ds.PixelSpacing = list(pixel_spacing)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = rescale_intercept
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = pixels.astype(np.int16).tobytes()
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def ct_series(count: int, *, rows: int = 64, columns: int = 64, study_uid: str | None = None) -> Iterator[Dataset]:
    """``count`` slices of one new series."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for index in range(count):
        yield ct_slice(study_uid, series_uid, index, rows=rows, columns=columns)


def with_transfer_syntax(ds: Dataset, syntax: str) -> Dataset:
    """Re-encode ``ds`` in ``syntax`` (uncompressed, deflated or a compressed pixel syntax)."""
    syntax = UID(syntax)
    if syntax in COMPRESSED:
        ds.compress(syntax)
    elif syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax != ExplicitVRLittleEndian:
        raise ValueError(f"dicom_factory cannot make transfer syntax {syntax.name}")
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble + file meta) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, count: int, *, rows: int = 64, columns: int = 64, syntax: str = ExplicitVRLittleEndian,
                 study_uid: str | None = None) -> list[Path]:
    """Write one new series of ``count`` slices into ``folder``; return the file paths in order."""
    paths = []
    for index, ds in enumerate(ct_series(count, rows=rows, columns=columns, study_uid=study_uid)):
        paths.append(write(with_transfer_syntax(ds, syntax), folder / f"slice{index:04d}.dcm"))
    return paths


def dataset_bytes_after_meta(path: Path) -> bytes:
    """The encoded dataset of a DICOM file, without preamble and file meta (for byte comparisons)."""
    from pydicom.filereader import read_preamble, _read_file_meta_info

    with open(path, "rb") as fp:
        read_preamble(fp, force=False)
        _read_file_meta_info(fp)
        return fp.read()


def inflate(data: bytes) -> bytes:
    """Inflate a deflated dataset body."""
    return zlib.decompress(data, -zlib.MAX_WBITS)
