"""Reference segmentations as a radiologist's viewer would store them: a BINARY SEG with its own UIDs and
codes, written with highdicom from masks on the sample phantom's grid, with known perturbations of the truth."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from sample_dicom import generate

SAMPLE_DIR = Path(generate.__file__).resolve().parent / "chest_ct"
RIGHT_LUNG = hd.sr.CodedConcept("3341006", "SCT", "Right lung")
LEFT_LUNG = hd.sr.CodedConcept("44029006", "SCT", "Left lung")


def sample_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("CT_*.dcm"))


def truth_labels() -> np.ndarray:
    with np.load(SAMPLE_DIR / "ground_truth.npz") as data:
        return data["labels"]


def truth_lungs() -> dict[str, np.ndarray]:
    """The phantom's true right and left lung, ``[k, j, i]`` on the sample grid."""
    labels = truth_labels()
    return {"Right lung": labels == generate.RIGHT_LUNG, "Left lung": labels == generate.LEFT_LUNG}


def shifted(mask: np.ndarray, voxels: int, axis: int) -> np.ndarray:
    """``mask`` moved by ``voxels`` along ``axis`` (what leaves the grid is lost, what enters is empty)."""
    moved = np.zeros_like(mask)
    source = [slice(None)] * 3
    target = [slice(None)] * 3
    if voxels >= 0:
        source[axis], target[axis] = slice(0, mask.shape[axis] - voxels), slice(voxels, None)
    else:
        source[axis], target[axis] = slice(-voxels, None), slice(0, mask.shape[axis] + voxels)
    moved[tuple(target)] = mask[tuple(source)]
    return moved


def without_slices(mask: np.ndarray, slices: Sequence[int]) -> np.ndarray:
    cut = mask.copy()
    cut[list(slices)] = False
    return cut


def write_reference_seg(
    masks: dict[str, np.ndarray],
    path: Path,
    *,
    sources: Sequence[pydicom.Dataset] | None = None,
    types: dict[str, hd.sr.CodedConcept] | None = None,
    manufacturer: str = "OHIF",
    description: str = "corrected lungs",
) -> pydicom.Dataset:
    """A BINARY SEG of ``masks`` (label -> [k, j, i] mask on the sources' grid), as a viewer stores a correction."""
    sources = list(sources) if sources is not None else [pydicom.dcmread(p) for p in sample_files()]
    types = types or {"Right lung": RIGHT_LUNG, "Left lung": LEFT_LUNG}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=types.get(label, codes.SCT.Tissue),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in enumerate(masks, start=1)
    ]
    stacked = np.stack([np.asarray(m, dtype=np.uint8) for m in masks.values()], axis=-1)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="viewer",
        software_versions="3",
        device_serial_number="1",
        series_description=description,
        omit_empty_frames=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return seg


def copy_series(folder: Path, files: Sequence[Path] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, folder / f.name)) for f in (files or sample_files())]


def write_reference_sr(findings: list[tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]], path: Path,
                       sources: Sequence[pydicom.Dataset] | None = None) -> pydicom.Dataset:
    """A reader's Comprehensive 3D SR with coded findings (concept = value) about the sample series."""
    sources = list(sources) if sources is not None else [pydicom.dcmread(p, stop_before_pixels=True) for p in sample_files()]
    items = [hd.sr.CodeContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
             for name, value in findings]
    container = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
    container.ContentSequence = items
    report = hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=container,
        series_instance_uid=hd.UID(),
        series_number=301,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="OHIF",
        series_description="reader findings",
    )
    report.save_as(path)
    return report
