"""DICOM Segmentation (SEG) from a pipeline's segments, built with highdicom.

BINARY is the default because viewers support it most widely; LABELMAP is an option (smaller to build,
larger on disk unless compressed). Frames follow the source slices one to one, so every SEG frame references
the source instance (or frame) it was derived from and lies at the same position.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from pipelines.settings import ResultOptions
from pipelines.gc_pause import paused_gc
from pipelines.results.colours import segment_colour
from pipelines.types import Code, PipelineResult, Segment, Volume
from pipelines.upstream import highdicom_iod
from pipelines.upstream.highdicom_seg import MAX_BIT_SEGMENTS, FastSegmentation, SegmentBits

logger = logging.getLogger(__name__)
highdicom_iod.install()

# Type 2 attributes highdicom copies from the first source image; absent ones are added empty.
_PATIENT_STUDY_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def coded(code: Code) -> hd.sr.CodedConcept:
    """A pacsnode Code as a highdicom coded concept."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def algorithm_identification(result: PipelineResult) -> hd.AlgorithmIdentificationSequence:
    """Name, version and family of the pipeline that made ``result``."""
    return hd.AlgorithmIdentificationSequence(
        name=result.pipeline, family=coded(result.algorithm_family), version=result.version
    )


def check_segments(volume: Volume, segments: Sequence[Segment]) -> list[Segment]:
    """The segments sorted by number; raises ValueError when a mask or numbering cannot make a SEG."""
    if not segments:
        raise ValueError("a SEG needs at least one segment")
    ordered = sorted(segments, key=lambda segment: segment.number)
    numbers = [segment.number for segment in ordered]
    if numbers != list(range(1, len(ordered) + 1)):
        raise ValueError(f"segment numbers must be 1..{len(ordered)} without gaps, got {numbers}")
    for segment in ordered:
        if segment.shape != volume.array.shape:
            raise ValueError(
                f"segment {segment.number} ({segment.label}): mask shape {segment.shape} "
                f"differs from the volume's {volume.array.shape}"
            )
    return ordered


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask.view(np.uint8) if mask.dtype == np.bool_ else (mask != 0).view(np.uint8)


def _boxes_meet(a: Segment, b: Segment) -> bool:
    return not (a.empty or b.empty) and all(x.start < y.stop and y.start < x.stop for x, y in zip(a.box, b.box))


def segments_overlap(segments: Sequence[Segment], shape: tuple[int, ...], slab: int = 8) -> bool:
    """Whether any voxel belongs to more than one segment.

    Only segments whose bounding boxes meet can overlap; their masks are counted a few slices at a time, so
    the check needs little memory whatever the number of segments.
    """
    meeting = [s for s in segments if any(_boxes_meet(s, other) for other in segments if other is not s)]
    if not meeting:
        return False
    count = np.empty((slab, *shape[1:]), dtype=np.uint8)
    for start in range(0, shape[0], slab):
        part = count[: min(slab, shape[0] - start)]
        part.fill(0)
        for segment in meeting:
            piece = segment.in_slab(start, start + part.shape[0])
            if piece is not None:
                box, cropped = piece
                np.add(part[box], _as_uint8(cropped), out=part[box])
        if part.max(initial=0) > 1:
            return True
    return False


def label_array(segments: Sequence[Segment], shape: tuple[int, ...]) -> np.ndarray:
    """One integer label per voxel; where segments overlap, the highest segment number wins.

    A label map is a fraction of the memory of stacked masks, and highdicom needs no overlap check for it.
    """
    labels = np.zeros(shape, dtype=np.uint8 if len(segments) < 256 else np.uint16)
    for segment in segments:
        if not segment.empty:
            np.putmask(labels[segment.box], segment.cropped, segment.number)
    return labels


def stacked_array(segments: Sequence[Segment], shape: tuple[int, ...]) -> np.ndarray:
    """Masks stacked along a last axis (highdicom's form for overlapping segments), one byte per voxel."""
    stacked = np.zeros((len(segments), *shape), dtype=np.uint8)
    for index, segment in enumerate(segments):
        if not segment.empty:
            stacked[index][segment.box] = _as_uint8(segment.cropped)
    # A view with segments last; each frame's mask for one segment stays contiguous in memory.
    return np.moveaxis(stacked, 0, -1)


def segment_bits(segments: Sequence[Segment], shape: tuple[int, ...], slab: int = 16) -> np.ndarray:
    """The bits of up to ``MAX_BIT_SEGMENTS`` segments numbered 1..n, filled a few slices at a time."""
    if len(segments) > MAX_BIT_SEGMENTS:
        raise ValueError(f"{len(segments)} segments do not fit in {MAX_BIT_SEGMENTS} bits")
    bits = np.zeros(shape, dtype=np.uint8)
    for segment in segments:
        for start in range(segment.box[0].start, segment.box[0].stop, slab):
            piece = segment.in_slab(start, start + slab)
            if piece is None:
                continue
            box, cropped = piece
            part = bits[start : start + slab][box]
            np.bitwise_or(part, np.left_shift(_as_uint8(cropped), segment.number - 1), out=part)
    return bits


def to_source_frames(array: np.ndarray, volume: Volume) -> np.ndarray:
    """Rearrange slices into the frame order of an enhanced multi-frame source (frames not in the volume empty)."""
    if volume.frame_numbers is None:
        return array
    number_of_frames = int(volume.datasets[0].NumberOfFrames)
    order = np.asarray(volume.frame_numbers, dtype=np.int64) - 1
    if len(order) == number_of_frames and np.array_equal(order, np.arange(number_of_frames)):
        return array
    frames = np.zeros((number_of_frames, *array.shape[1:]), dtype=array.dtype)
    frames[order] = array
    return frames


def source_images(volume: Volume) -> list[Dataset]:
    """The source headers, the first one completed with empty type 2 patient/study attributes if absent."""
    images = list(volume.datasets)
    first = images[0]
    missing = [keyword for keyword in _PATIENT_STUDY_KEYWORDS if keyword not in first]
    if missing:
        completed = Dataset()
        completed.update(first)
        completed.file_meta = getattr(first, "file_meta", Dataset())
        for keyword in missing:
            setattr(completed, keyword, "")
        images[0] = completed
    return images


def segment_descriptions(
    segments: Sequence[Segment], result: PipelineResult, tracking_uids: Sequence[str]
) -> list[hd.seg.SegmentDescription]:
    """Coded descriptions of ``segments`` with algorithm identification and tracking identifiers."""
    algorithm = algorithm_identification(result)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=segment.number,
            segment_label=segment.label,
            segmented_property_category=coded(segment.category),
            segmented_property_type=coded(segment.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=tracking,
            tracking_id=segment.tracking_id or segment.label,
            # Viewers (OHIF) warn and pick their own colours without it; the fallback outlines use the same.
            display_color=hd.color.CIELabColor.from_rgb(*segment_colour(segment.number)),
        )
        for segment, tracking in zip(segments, tracking_uids, strict=True)
    ]
    for description, segment in zip(descriptions, segments):
        if segment.modifier is not None:  # highdicom takes no modifier; it sits in the type's code item
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                coded(segment.modifier)
            ]
    return descriptions


AUTO_KEEP_EMPTY_FRAMES_SEGMENTS = 8
"""With ``omit_empty_frames: auto``, a SEG of up to this many segments keeps its empty frames."""


def omits_empty_frames(options: ResultOptions, segments: int) -> bool:
    """Whether the SEG leaves out empty frames: as set, or (auto) for more than a few segments."""
    if isinstance(options.omit_empty_frames, bool):
        return options.omit_empty_frames
    return segments > AUTO_KEEP_EMPTY_FRAMES_SEGMENTS


def transfer_syntax(options: ResultOptions) -> str:
    """Lossless compression highdicom supports for the chosen type: JPEG 2000 for 1-bit BINARY, RLE for LABELMAP."""
    if not options.compress:
        return ExplicitVRLittleEndian
    return JPEG2000Lossless if options.seg_type == "binary" else RLELossless


def build_segmentation(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    *,
    series_uid: str,
    sop_instance_uid: str,
    tracking_uids: Sequence[str],
) -> hd.seg.Segmentation:
    """A SEG of ``result.segments`` on ``volume``'s grid, as a new series in the source study.

    Raises ValueError when the segments do not fit the volume (shape, numbering).
    """
    segments = check_segments(volume, result.segments)
    overlap = segments_overlap(segments, volume.array.shape)
    if overlap and options.seg_type == "labelmap":
        logger.warning(
            "series %s: segments of %s overlap; the LABELMAP SEG keeps the highest segment number where they do",
            volume.datasets[0].SeriesInstanceUID,
            result.pipeline,
        )
    if overlap and options.seg_type == "binary" and len(segments) <= MAX_BIT_SEGMENTS:
        pixels = to_source_frames(segment_bits(segments, volume.array.shape), volume).view(SegmentBits)
    elif overlap and options.seg_type == "binary":
        pixels = to_source_frames(stacked_array(segments, volume.array.shape), volume)
    else:
        pixels = to_source_frames(label_array(segments, volume.array.shape), volume)
    with paused_gc():  # highdicom makes about ten pydicom objects per frame
        seg = FastSegmentation(
            source_images=source_images(volume),
            pixel_array=pixels,
            segmentation_type=(
                hd.seg.SegmentationTypeValues.BINARY
                if options.seg_type == "binary"
                else hd.seg.SegmentationTypeValues.LABELMAP
            ),
            segment_descriptions=segment_descriptions(segments, result, tracking_uids),
            series_instance_uid=series_uid,
            series_number=options.series_number,
            series_description=f"{options.series_description_prefix} {result.pipeline} SEG"[:64],
            sop_instance_uid=sop_instance_uid,
            instance_number=1,
            manufacturer=options.manufacturer,
            manufacturer_model_name=result.pipeline,
            software_versions=result.version,
            device_serial_number="0",
            content_description=f"{result.pipeline} {result.version}"[:64],
            content_creator_name=options.content_creator,
            transfer_syntax_uid=transfer_syntax(options),
            omit_empty_frames=omits_empty_frames(options, len(segments)),
        )
    reference_related_series(seg, volume.related)
    return seg


def reference_related_series(seg: Dataset, related: Sequence[Dataset]) -> None:
    """Add the other series a model took as input (``Volume.related``) to the SEG's Referenced Series Sequence,
    so the SEG references every series it was derived from, not only the one its frames lie on."""
    by_series: dict[str, list[Dataset]] = {}
    for ds in related:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    for series_uid, datasets in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedInstanceSequence = []
        for ds in datasets:
            instance = Dataset()
            instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
            item.ReferencedInstanceSequence.append(instance)
        seg.ReferencedSeriesSequence.append(item)
