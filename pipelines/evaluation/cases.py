"""The cases of an evaluation set: one folder per case with the image series and its reference.

A case folder holds the series' DICOM files, the reference as one or more DICOM SEG files (anywhere in the
folder), and/or a ``reference.json`` of classifications. What is a SEG is read from each file's header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.uid import UID

REFERENCE_JSON = "reference.json"
SEGMENTATION_CLASSES = {
    UID("1.2.840.10008.5.1.4.1.1.66.4"),  # Segmentation Storage
    UID("1.2.840.10008.5.1.4.1.1.66.7"),  # Label Map Segmentation Storage
}


@dataclass
class Case:
    """One case folder, its files sorted into image files and reference SEGs."""

    name: str
    folder: Path
    images: list[Path] = field(default_factory=list)
    reference_segs: list[Path] = field(default_factory=list)
    reference_json: Path | None = None
    unreadable: list[str] = field(default_factory=list)


def is_segmentation(header: pydicom.Dataset) -> bool:
    return UID(str(getattr(header, "SOPClassUID", ""))) in SEGMENTATION_CLASSES or getattr(header, "Modality", "") == "SEG"


def is_structured_report(header: pydicom.Dataset) -> bool:
    return getattr(header, "Modality", "") == "SR" and "ContentSequence" in header


def read_case(folder: Path) -> Case:
    """Sort one case folder's files (recursively) into images, reference SEGs and ``reference.json``."""
    case = Case(name=folder.name, folder=folder)
    json_path = folder / REFERENCE_JSON
    case.reference_json = json_path if json_path.is_file() else None
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p != json_path):
        if not is_dicom(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError) as exc:
            case.unreadable.append(f"{path.name}: {exc}")
            continue
        (case.reference_segs if is_segmentation(header) else case.images).append(path)
    return case


def find_cases(cases_dir: Path) -> list[Case]:
    """Every sub-folder of ``cases_dir`` as a case, in name order; raises ValueError when there is none."""
    folders = sorted(p for p in Path(cases_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{cases_dir}: no case folders (expected one folder per case with its series and reference)")
    return [read_case(folder) for folder in folders]
