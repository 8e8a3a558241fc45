"""A synthetic chest CT phantom: a DICOM CT series and its ground-truth labels.

The phantom is defined analytically in patient LPS millimetres (x to the patient's left, y posterior, z
superior), so it can be sampled on any grid (axial, oblique, flipped) and its truth is exact on that grid.

    python -m sample_dicom.generate                       # the checked-in sample (72 x 160 x 160)
    python -m sample_dicom.generate --size benchmark OUT  # 300 x 512 x 512 for benchmarks
"""

from __future__ import annotations

import argparse
import datetime
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

# Ground-truth label values.
OUTSIDE, SOFT_TISSUE, FAT, BONE, RIGHT_LUNG, LEFT_LUNG, AIRWAY, TABLE = range(8)
LABEL_NAMES = {
    OUTSIDE: "outside air",
    SOFT_TISSUE: "soft tissue",
    FAT: "adipose tissue",
    BONE: "bone",
    RIGHT_LUNG: "right lung",
    LEFT_LUNG: "left lung",
    AIRWAY: "airway",
    TABLE: "table",
}
BODY_LABELS = (SOFT_TISSUE, FAT, BONE, RIGHT_LUNG, LEFT_LUNG, AIRWAY)

# Mean HU and noise standard deviation per tissue.
HU = {"air": -1000, "soft": 40, "fat": -100, "cortex": 800, "cancellous": 300, "lung": -860,
      "emphysema": -985, "table": 120, "rib": 650}
NOISE_HU = 12.0
BLUR_PIXELS = 0.4
LUNG_NOISE_HU = 25.0

EMPHYSEMA_SPHERES = [((-92.0, 8.0, -40.0), 13.0), ((95.0, -12.0, 70.0), 12.0), ((-72.0, -22.0, 88.0), 10.0),
                     ((82.0, 18.0, -55.0), 14.0)]


@dataclass(frozen=True)
class Grid:
    """Where the slices lie: row/column direction cosines, spacings and the first slice's position."""

    shape: tuple[int, int, int]  # slices, rows, columns
    pixel_spacing: float
    slice_spacing: float
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def affine(self) -> np.ndarray:
        """(i, j, k) -> LPS mm, the volume centred on ``center``."""
        row, column = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        normal = np.cross(row, column)
        n_k, n_j, n_i = self.shape
        affine = np.eye(4)
        affine[:3, 0] = row * self.pixel_spacing
        affine[:3, 1] = column * self.pixel_spacing
        affine[:3, 2] = normal * self.slice_spacing
        half = np.array([(n_i - 1) / 2, (n_j - 1) / 2, (n_k - 1) / 2])
        affine[:3, 3] = np.array(self.center) - affine[:3, :3] @ half
        return affine


SAMPLE = Grid(shape=(72, 160, 160), pixel_spacing=2.2, slice_spacing=4.0)
BENCHMARK = Grid(shape=(300, 512, 512), pixel_spacing=0.7, slice_spacing=1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, a: float, b: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _tube(points: np.ndarray, start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """Points within ``radius`` of the segment start-end."""
    direction = end - start
    t = np.clip(((points - start) @ direction) / float(direction @ direction), 0.0, 1.0)
    nearest = start + t[..., None] * direction
    return np.linalg.norm(points - nearest, axis=-1) <= radius


def labels_at(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and mean HU of the phantom at LPS points (arrays of one shape)."""
    labels = np.full(x.shape, OUTSIDE, dtype=np.uint8)
    mean = np.full(x.shape, HU["air"], dtype=np.float32)

    def put(mask: np.ndarray, label: int, hu: float) -> None:
        labels[mask] = label
        mean[mask] = hu

    put((y >= 125) & (y <= 135) & (np.abs(x) <= 170), TABLE, HU["table"])
    put(_ellipse(x, y, 160, 110), SOFT_TISSUE, HU["soft"])  # skin
    put(_ellipse(x, y, 158, 108), FAT, HU["fat"])  # subcutaneous fat
    put(_ellipse(x, y, 144, 94), SOFT_TISSUE, HU["soft"])  # muscle and organs
    rib_band = np.sin(2 * np.pi * (z / 28.0 + np.arctan2(y, x) / 9.0)) > 0.35
    put(_ellipse(x, y, 137, 88) & ~_ellipse(x, y, 131, 82) & rib_band, BONE, HU["rib"])
    put(_ellipse(x, y, 20, 20, 0, 62), BONE, HU["cortex"])  # vertebral body cortex
    put(_ellipse(x, y, 16, 16, 0, 62), BONE, HU["cancellous"])
    put(_ellipse(x, y, 14, 12, 0, 92), BONE, HU["cortex"])  # posterior arch
    put(_ellipse(x, y, 8, 7, 0, 92), SOFT_TISSUE, HU["soft"])  # spinal canal
    put((np.abs(x) <= 14) & (y >= -92) & (y <= -84) & (z >= -60), BONE, HU["cortex"])  # sternum
    put(_ellipse(x, y, 14, 10, 35, -45) & (np.abs(z - 10) <= 40), FAT, HU["fat"])  # pericardial fat pad
    for label, cx in ((RIGHT_LUNG, -68.0), (LEFT_LUNG, 68.0)):
        lung = ((x - cx) / 48) ** 2 + (y / 55) ** 2 + ((z - 15) / 110) ** 2 <= 1.0
        put(lung, label, HU["lung"])
        for (sx, sy, sz), radius in EMPHYSEMA_SPHERES:
            if np.sign(sx) == np.sign(cx):
                sphere = (x - sx) ** 2 + (y - sy) ** 2 + (z - sz) ** 2 <= radius**2
                mean[lung & sphere] = HU["emphysema"]
    points = np.stack([x, y, z], axis=-1)
    carina = np.array([0.0, -10.0, 60.0])
    airway = _tube(points, carina, np.array([0.0, -10.0, 1000.0]), 9.0)
    for side in (-1.0, 1.0):
        airway |= _tube(points, carina, np.array([side * 48.0, -4.0, 28.0]), 5.0)
    put(airway, AIRWAY, HU["air"])
    return labels, mean


def slices(grid: Grid, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per slice k: (HU int16 with noise, labels uint8, emphysema bool), each [j, i]."""
    rng = np.random.default_rng(seed)
    affine = grid.affine
    _, n_j, n_i = grid.shape
    j, i = np.mgrid[0:n_j, 0:n_i].astype(np.float64)
    for k in range(grid.shape[0]):
        x, y, z = (affine[axis, 0] * i + affine[axis, 1] * j + affine[axis, 2] * k + affine[axis, 3] for axis in range(3))
        labels, mean = labels_at(x, y, z)
        emphysema = np.isin(labels, (RIGHT_LUNG, LEFT_LUNG)) & (mean == HU["emphysema"])
        lung = np.isin(labels, (RIGHT_LUNG, LEFT_LUNG))
        mean = gaussian_filter(mean, BLUR_PIXELS)  # partial volume at edges, as a scanner's point spread gives
        noise = rng.normal(0.0, 1.0, size=labels.shape) * np.where(lung, LUNG_NOISE_HU, NOISE_HU)
        hu = np.clip(np.rint(mean + noise), -1024, 3071).astype(np.int16)
        yield hu, labels, emphysema


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["pacsnode-phantom", *(str(p) for p in parts)])


def ct_dataset(hu: np.ndarray, grid: Grid, k: int, *, series: str = "sample") -> Dataset:
    """One CT Image IOD instance (slice ``k`` of ``grid``) with fixed, deterministic UIDs."""
    affine = grid.affine
    sop_uid = _uid(series, grid, "instance", k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20240102"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "101500"
    ds.AccessionNumber = "PHANTOM1"
    ds.Modality = "CT"
    ds.Manufacturer = "pacsnode phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic chest CT phantom"
    ds.SeriesDescription = f"Chest phantom {series}"
    ds.PatientName = "Phantom^Chest"
    ds.PatientID = "PHANTOM-001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = f"{grid.slice_spacing:g}"
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid("study")
    ds.SeriesInstanceUID = _uid(series, grid, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [round(float(v), 4) for v in affine[:3, :3] @ [0, 0, k] + affine[:3, 3]]
    ds.ImageOrientationPatient = [round(float(v), 6) for v in grid.orientation]
    ds.FrameOfReferenceUID = _uid("frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{float(np.dot(ds.ImagePositionPatient, np.cross(grid.orientation[:3], grid.orientation[3:]))):.3f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [f"{grid.pixel_spacing:g}", f"{grid.pixel_spacing:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = (hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
    return ds


def write_phantom(folder: Path, grid: Grid = SAMPLE, *, series: str = "sample", seed: int = 0) -> list[Path]:
    """Write the series as ``folder/CT_0001.dcm``... and its truth as ``folder/ground_truth.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels, emphysema = [], [], []
    for k, (hu, label, emph) in enumerate(slices(grid, seed)):
        path = folder / f"CT_{k + 1:04d}.dcm"
        ct_dataset(hu, grid, k, series=series).save_as(path, enforce_file_format=True)
        paths.append(path)
        labels.append(label)
        emphysema.append(emph)
    np.savez_compressed(
        folder / "ground_truth.npz",
        labels=np.stack(labels),
        emphysema=np.stack(emphysema),
        affine=grid.affine,
        label_names=np.array([LABEL_NAMES[v] for v in sorted(LABEL_NAMES)]),
    )
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=HERE / "chest_ct", help="output folder")
    parser.add_argument("--size", choices=["sample", "benchmark"], default="sample")
    args = parser.parse_args(argv)
    grid = SAMPLE if args.size == "sample" else BENCHMARK
    started = datetime.datetime.now()
    paths = write_phantom(args.out, grid, series=args.size)
    print(f"wrote {len(paths)} slices to {args.out} in {(datetime.datetime.now() - started).total_seconds():.1f} s")


if __name__ == "__main__":
    main()
