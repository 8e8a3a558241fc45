"""Load a DICOM series into one correctly oriented volume (LPS affine, HU), or say why it cannot be one.

Handles classic single-frame series (in any file order), Enhanced multi-frame CT/MR (per-frame functional
groups) and every transfer syntax pydicom can decode with the pylibjpeg / pyjpegls plugins installed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipelines.gc_pause import paused_gc
from pipelines.types import UnsupportedSeries, Volume

logger = logging.getLogger(__name__)

ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between direction cosines still counted as the same orientation."""
POSITION_TOLERANCE_MM = 0.01
"""Slices closer than this along the normal are at the same position."""
SPACING_TOLERANCE = 0.1
"""Largest relative deviation of one slice gap from the median gap; a larger gap means missing slices."""
DEFER_BYTES = 64 * 1024
"""Values larger than this (the pixel data) are read from the file only when decoded, one file at a time: the
series' pixel bytes are never all in memory at once beside the volume (1.5x the volume's size otherwise)."""

NON_IMAGE_MODALITIES = {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "PR", "KO", "DOC", "REG", "RWV"}


@dataclass
class _Slice:
    """One 2D image of the series (a file, or one frame of a multi-frame file) with its geometry."""

    source: int
    frame: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    group: tuple[str, ...]
    distance: float = 0.0


def load_series(paths: Sequence[Path | str]) -> Volume:
    """Read the files of one series and build its volume; raises UnsupportedSeries with the reason."""
    if not paths:
        raise UnsupportedSeries("no files given for the series")
    with paused_gc():
        datasets = []
        for path in paths:
            try:
                datasets.append(pydicom.dcmread(path, defer_size=DEFER_BYTES))
            except (InvalidDicomError, OSError, EOFError) as exc:
                raise UnsupportedSeries(f"{Path(path).name}: not a readable DICOM file ({exc})") from exc
        return load_datasets(datasets)


def load_datasets(datasets: Iterable[Dataset]) -> Volume:
    """Build the volume from datasets holding pixel data; their PixelData is dropped once decoded."""
    notes: list[str] = []
    images = _image_datasets(list(datasets), notes)
    multi_frame = [ds for ds in images if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1]
    if multi_frame:
        if len(images) > 1:
            raise UnsupportedSeries(
                f"series mixes {len(multi_frame)} multi-frame instance(s) with {len(images) - len(multi_frame)} "
                "other image(s); send one enhanced multi-frame instance per series"
            )
        slices = _enhanced_slices(images[0])
    else:
        slices = [_classic_slice(index, ds) for index, ds in enumerate(images)]
    _check_same_grid(images)
    normal = _check_one_orientation(slices)
    for item in slices:
        item.distance = float(np.dot(item.position, normal))
    slices = _one_acquisition(slices, notes)
    slices.sort(key=lambda s: s.distance)
    step = _slice_step(slices, normal, images[0])
    affine = _affine(slices[0], step)
    array = _pixels(images, slices)
    if multi_frame:
        kept = [images[0]]
        frame_numbers: list[int] | None = [s.frame for s in slices]  # type: ignore[misc]
    else:
        kept = [images[s.source] for s in slices]
        frame_numbers = None
    for ds in kept:
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                del ds[keyword]
    logger.info(
        "loaded series %s: %s voxels, spacing %s mm",
        getattr(kept[0], "SeriesInstanceUID", "?"),
        "x".join(str(n) for n in array.shape[::-1]),
        ", ".join(f"{np.linalg.norm(affine[:3, a]):.3g}" for a in range(3)),
    )
    return Volume(array=array, affine=affine, datasets=kept, frame_numbers=frame_numbers, notes=notes)


def _image_datasets(datasets: list[Dataset], notes: list[str]) -> list[Dataset]:
    """The image datasets of the series: non-images rejected, localizers and duplicate instances dropped."""
    images: list[Dataset] = []
    seen: set[str] = set()
    localizers = 0
    for ds in datasets:
        sop_class = getattr(ds, "SOPClassUID", None)
        class_name = sop_class.name if sop_class is not None else "unknown SOP class"
        modality = str(getattr(ds, "Modality", ""))
        if "PixelData" not in ds or modality in NON_IMAGE_MODALITIES:
            raise UnsupportedSeries(
                f"instance {getattr(ds, 'SOPInstanceUID', '?')} is not an image ({class_name}, modality "
                f"{modality or 'none'}); a volume needs image instances only"
            )
        image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
        if "LOCALIZER" in image_type:
            localizers += 1
            continue
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        if uid and uid in seen:
            notes.append(f"duplicate instance {uid} ignored")
            continue
        seen.add(uid)
        images.append(ds)
    if localizers:
        notes.append(f"skipped {localizers} localizer image(s)")
    if not images:
        raise UnsupportedSeries("the series holds no image other than localizers")
    for ds in images:
        photometric = str(getattr(ds, "PhotometricInterpretation", ""))
        if int(getattr(ds, "SamplesPerPixel", 1)) != 1 or not photometric.startswith("MONOCHROME"):
            raise UnsupportedSeries(
                f"instance {ds.SOPInstanceUID} is {photometric or 'not grayscale'}; a volume needs grayscale images"
            )
    return images


def _first(item: Any, keyword: str) -> Dataset | None:
    sequence = getattr(item, keyword, None)
    return sequence[0] if sequence else None


def _group_key(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in values)


def _classic_slice(index: int, ds: Dataset) -> _Slice:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds or "PixelSpacing" not in ds:
        raise UnsupportedSeries(
            f"instance {ds.SOPInstanceUID} has no patient geometry (ImageOrientationPatient, ImagePositionPatient, "
            "PixelSpacing); it cannot be placed in a volume"
        )
    return _Slice(
        source=index,
        frame=None,
        position=np.array(ds.ImagePositionPatient, dtype=float),
        orientation=np.array(ds.ImageOrientationPatient, dtype=float),
        pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        slope=float(getattr(ds, "RescaleSlope", 1) or 1),
        intercept=float(getattr(ds, "RescaleIntercept", 0) or 0),
        group=_group_key(
            (
                getattr(ds, "AcquisitionNumber", None),
                getattr(ds, "TemporalPositionIdentifier", None),
                getattr(ds, "EchoNumbers", None),
                getattr(ds, "TriggerTime", None),
                "\\".join(str(v) for v in (getattr(ds, "ImageType", None) or [])),
            )
        ),
    )


def _enhanced_slices(ds: Dataset) -> list[_Slice]:
    """One _Slice per frame of an Enhanced CT/MR instance, from its per-frame and shared functional groups."""
    shared = _first(ds, "SharedFunctionalGroupsSequence") or Dataset()
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []
    frames = int(ds.NumberOfFrames)
    if len(per_frame) != frames:
        raise UnsupportedSeries(
            f"instance {ds.SOPInstanceUID}: {frames} frames but {len(per_frame)} per-frame functional groups"
        )

    def group(item: Dataset, keyword: str) -> Dataset | None:
        return _first(item, keyword) or _first(shared, keyword)

    slices = []
    for number, item in enumerate(per_frame, start=1):
        position, orientation, measures = (
            group(item, "PlanePositionSequence"),
            group(item, "PlaneOrientationSequence"),
            group(item, "PixelMeasuresSequence"),
        )
        if position is None or orientation is None or measures is None:
            raise UnsupportedSeries(
                f"instance {ds.SOPInstanceUID} frame {number} lacks plane position, orientation or pixel measures"
            )
        transform = group(item, "PixelValueTransformationSequence") or Dataset()
        content = _first(item, "FrameContentSequence") or Dataset()
        echo = group(item, "MREchoSequence") or Dataset()
        slices.append(
            _Slice(
                source=0,
                frame=number,
                position=np.array(position.ImagePositionPatient, dtype=float),
                orientation=np.array(orientation.ImageOrientationPatient, dtype=float),
                pixel_spacing=(float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
                slope=float(getattr(transform, "RescaleSlope", 1) or 1),
                intercept=float(getattr(transform, "RescaleIntercept", 0) or 0),
                group=_group_key(
                    (
                        getattr(content, "StackID", None),
                        getattr(content, "TemporalPositionIndex", None),
                        getattr(echo, "EffectiveEchoTime", None),
                    )
                ),
            )
        )
    return slices


def _check_same_grid(images: list[Dataset]) -> None:
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in images}
    if len(shapes) > 1:
        raise UnsupportedSeries(f"images of different sizes in one series: {sorted(shapes)}")


def _check_one_orientation(slices: list[_Slice]) -> np.ndarray:
    """The unit slice normal; raises when the slices are not all parallel with one pixel spacing."""
    reference = slices[0].orientation
    for item in slices[1:]:
        if np.max(np.abs(item.orientation - reference)) > ORIENTATION_TOLERANCE:
            raise UnsupportedSeries(
                "mixed orientations in one series: "
                f"{np.round(reference, 4).tolist()} and {np.round(item.orientation, 4).tolist()}; "
                "send each orientation as its own series"
            )
        if not np.allclose(item.pixel_spacing, slices[0].pixel_spacing, rtol=1e-3):
            raise UnsupportedSeries(
                f"mixed pixel spacings in one series: {slices[0].pixel_spacing} and {item.pixel_spacing}"
            )
    normal = np.cross(reference[:3], reference[3:])
    length = np.linalg.norm(normal)
    if length < 0.5:
        raise UnsupportedSeries(f"ImageOrientationPatient {reference.tolist()} does not hold two orthogonal directions")
    return normal / length


def _one_acquisition(slices: list[_Slice], notes: list[str]) -> list[_Slice]:
    """The slices of one acquisition when several share positions.

    Rule: when slices repeat positions, split them by acquisition number, temporal position, echo, trigger time
    and image type (stack, temporal index and echo time for enhanced frames); keep the group with the most
    slices, the first in that key order on ties, and say so in the notes.
    """
    if not _has_duplicate_positions(slices):
        return slices
    groups: dict[tuple[str, ...], list[_Slice]] = defaultdict(list)
    for item in slices:
        groups[item.group].append(item)
    if len(groups) == 1 or any(_has_duplicate_positions(g) for g in groups.values()):
        raise UnsupportedSeries(
            "several slices at the same position that acquisition, temporal position, echo or image type do "
            "not tell apart; the series is not one volume"
        )
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    key, chosen = ordered[0]
    notes.append(
        f"series holds {len(groups)} acquisitions/phases at the same positions; used {_describe(key, chosen)} "
        f"({len(chosen)} slices; rule: most slices, first on ties)"
    )
    return chosen


def _describe(key: tuple[str, ...], chosen: list[_Slice]) -> str:
    names = (
        ("stack", "temporal position index", "effective echo time")
        if chosen[0].frame is not None
        else ("acquisition", "temporal position", "echo", "trigger time", "image type")
    )
    return ", ".join(f"{name} {value or '-'}" for name, value in zip(names, key))


def _has_duplicate_positions(slices: list[_Slice]) -> bool:
    distances = np.sort(np.array([s.distance for s in slices]))
    return bool(np.any(np.diff(distances) < POSITION_TOLERANCE_MM))


def _slice_step(slices: list[_Slice], normal: np.ndarray, header: Dataset) -> np.ndarray:
    """The LPS vector from one slice to the next; raises when slices are missing or spacing is irregular."""
    if len(slices) == 1:
        thickness = float(getattr(header, "SpacingBetweenSlices", 0) or getattr(header, "SliceThickness", 0) or 1)
        return normal * thickness
    gaps = np.diff([s.distance for s in slices])
    median = float(np.median(gaps))
    deviation = np.abs(gaps - median) / median
    if np.any(deviation > SPACING_TOLERANCE):
        worst = int(np.argmax(deviation))
        missing = int(round(gaps[worst] / median)) - 1
        reason = f"about {missing} slice(s) missing" if missing >= 1 else "irregular slice spacing"
        raise UnsupportedSeries(
            f"{reason}: gap of {gaps[worst]:.3g} mm between slices at {slices[worst].distance:.3g} and "
            f"{slices[worst + 1].distance:.3g} mm along the normal, median gap {median:.3g} mm "
            f"(tolerance {SPACING_TOLERANCE:.0%})"
        )
    return (slices[-1].position - slices[0].position) / (len(slices) - 1)


def _affine(first: _Slice, step: np.ndarray) -> np.ndarray:
    """(i, j, k, 1) -> LPS mm, with i along a row (column index), j down a column (row index)."""
    row_cosines, column_cosines = first.orientation[:3], first.orientation[3:]
    row_spacing, column_spacing = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_cosines * column_spacing
    affine[:3, 1] = column_cosines * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = first.position
    return affine


def _pixels(images: list[Dataset], slices: list[_Slice]) -> np.ndarray:
    """The float32 [k, j, i] array with each slice's rescale applied."""
    rows, columns = int(images[0].Rows), int(images[0].Columns)
    array = np.empty((len(slices), rows, columns), dtype=np.float32)
    frames = _decode(images[0]) if slices[0].frame is not None else None
    for k, item in enumerate(slices):
        if frames is not None:
            stored = frames[item.frame - 1]  # type: ignore[operator]
        else:
            stored = _decode(images[item.source])
            del images[item.source].PixelData  # keep the peak near one volume, not volume plus all files
        # One pass per slice where the slope is 1 (CT): the conversion to float32 and the rescale together.
        if item.slope != 1.0:
            np.multiply(stored, np.float32(item.slope), out=array[k], dtype=np.float32)
            if item.intercept != 0.0:
                np.add(array[k], np.float32(item.intercept), out=array[k])
        else:
            np.add(stored, np.float32(item.intercept), out=array[k], dtype=np.float32)
    return array


NATIVE_LITTLE_ENDIAN = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def _decode(ds: Dataset) -> np.ndarray:
    """Stored pixel values: read straight from the buffer for plain little-endian data (pydicom's general
    path costs more per slice), else decoded by pydicom and its pylibjpeg / pyjpegls plugins."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    bits, stored = int(getattr(ds, "BitsAllocated", 0)), int(getattr(ds, "BitsStored", 0))
    signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if syntax in NATIVE_LITTLE_ENDIAN and bits == 16 and frames == 1 and (stored == 16 or not signed):
        buffer = ds.PixelData
        expected = int(ds.Rows) * int(ds.Columns) * 2
        if len(buffer) >= expected:
            pixels = np.frombuffer(buffer, dtype="<i2" if signed else "<u2", count=expected // 2)
            if stored < 16:
                pixels = pixels & np.uint16((1 << stored) - 1)  # bits above HighBit are not part of the value
            return pixels.reshape(int(ds.Rows), int(ds.Columns))
    try:
        return ds.pixel_array
    except Exception as exc:  # pydicom raises several types for undecodable or truncated pixel data
        raise UnsupportedSeries(
            f"instance {getattr(ds, 'SOPInstanceUID', '?')}: cannot decode pixel data in transfer syntax "
            f"{syntax.name if syntax else '?'}: {exc}"
        ) from exc
