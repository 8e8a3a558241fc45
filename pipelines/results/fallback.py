"""Fallback for viewers without SEG support: Secondary Capture key slices with coloured outlines and a legend.

Each key slice (the largest cross-section of each segment) is windowed to greyscale, the segments present on
it are drawn as coloured outlines, and a legend strip under the image names each colour. The images carry
BurnedInAnnotation YES, ImageType DERIVED\\SECONDARY and say in their description and comments that they are
derived and not for primary diagnosis. They join the source study and reference their source slice.
Writers know nothing of models: a Volume and a PipelineResult in, datasets out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pipelines.settings import ResultOptions
from pipelines.results.colours import segment_colour
from pipelines.results.render import draw_segments, enlarged, greyscale, window_of
from pipelines.results.uids import job_uid, result_uids
from pipelines.types import Code, PipelineResult, Segment, Volume

logger = logging.getLogger(__name__)

NOT_FOR_DIAGNOSIS = "DERIVED - NOT FOR PRIMARY DIAGNOSIS"
MIN_WIDTH = 512
SERIES_NUMBER_OFFSET = 2  # the SEG uses series_number, the SR the next one


@dataclass(frozen=True)
class KeySlice:
    """A slice index of the volume and the numbers of the segments drawn on it."""

    index: int
    segment_numbers: tuple[int, ...]


def key_slices(segments: list[Segment], max_slices: int) -> list[KeySlice]:
    """The largest cross-section of each segment, deduplicated, at most ``max_slices``, in slice order."""
    if max_slices < 1:
        raise ValueError(f"max_slices must be at least 1, got {max_slices}")
    chosen: list[int] = []
    by_size = sorted(segments, key=lambda s: -s.voxel_count)
    for segment in by_size:
        areas = segment.slice_areas()
        if areas.max(initial=0) == 0:
            continue
        index = int(np.argmax(areas))
        if index not in chosen and len(chosen) < max_slices:
            chosen.append(index)
    return [
        KeySlice(index, tuple(s.number for s in segments if s.slice_areas()[index])) for index in sorted(chosen)
    ]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_key_slice(volume: Volume, key: KeySlice, segments: list[Segment], result: PipelineResult) -> np.ndarray:
    """The RGB picture of one key slice: outlines on the windowed image, a legend strip below."""
    rows, columns = volume.array.shape[1:]
    scale = max(1, -(-MIN_WIDTH // columns))
    source = volume.datasets[key.index if volume.frame_numbers is None else 0]
    plane = volume.array[key.index]
    image = enlarged(greyscale(plane, window_of(source, plane)), scale)
    drawn = [(segment.on_slice(key.index), segment_colour(segment.number)) for segment in segments
             if segment.number in key.segment_numbers]
    image = draw_segments(image, drawn, style="outline", scale=scale)
    width = image.shape[1]
    line = 20
    legend = Image.new("RGB", (width, line * (len(segments) + 2) + 8), (0, 0, 0))
    draw = ImageDraw.Draw(legend)
    font = _font(14)
    draw.text((6, 4), f"{NOT_FOR_DIAGNOSIS} - pacsnode {result.pipeline} {result.version}", fill=(255, 255, 0), font=font)
    for row, segment in enumerate(segments, start=1):
        top = 4 + row * line
        shown = "" if segment.number in key.segment_numbers else " (not on this slice)"
        draw.rectangle((6, top + 2, 20, top + 14), fill=segment_colour(segment.number))
        draw.text((28, top), f"{segment.number}: {segment.label}{shown}", fill=(255, 255, 255), font=font)
    draw.text((6, 4 + (len(segments) + 1) * line), f"slice {key.index + 1} of {volume.array.shape[0]}",
              fill=(200, 200, 200), font=font)
    return np.concatenate([image, np.asarray(legend)], axis=0)


def _patient_orientation(volume: Volume) -> tuple[str, str]:
    """Patient Orientation (row, column directions) from the volume's affine: the dominant axis, e.g. ('L', 'P').

    highdicom takes one letter per direction; for an oblique plane that is the nearest patient axis.
    """
    letters = (("L", "R"), ("P", "A"), ("H", "F"))

    def name(vector: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(vector)))
        return letters[axis][0 if vector[axis] > 0 else 1]

    return name(volume.affine[:3, 0]), name(volume.affine[:3, 1])


def _source_reference(volume: Volume, index: int) -> Dataset:
    source = volume.datasets[index if volume.frame_numbers is None else 0]
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if volume.frame_numbers is not None:
        item.ReferencedFrameNumber = volume.frame_numbers[index]
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121322", "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item


def build_fallback(
    volume: Volume, result: PipelineResult, options: ResultOptions, *, job_key: str, max_slices: int = 6
) -> list[Dataset]:
    """Secondary Capture images of the key slices of ``result``'s segments; empty when no segment has voxels.

    The same ``job_key`` gives the same Series and SOP Instance UIDs. Raises ValueError when a mask does not
    fit the volume.
    """
    segments = sorted(result.segments, key=lambda s: s.number)
    for segment in segments:
        if segment.shape != volume.array.shape:
            raise ValueError(
                f"segment {segment.number} ({segment.label}): mask shape {segment.shape} differs from "
                f"the volume's {volume.array.shape}"
            )
    keys = key_slices(segments, max_slices) if segments else []
    if not keys:
        return []
    series_uid = result_uids(job_key, "fallback").series_uid
    description = f"{options.series_description_prefix} {result.pipeline} outlines (NOT FOR DIAGNOSIS)"[:64]
    orientation = _patient_orientation(volume)
    images: list[Dataset] = []
    for number, key in enumerate(keys, start=1):
        source = volume.datasets[key.index if volume.frame_numbers is None else 0]
        pixels = render_key_slice(volume, key, segments, result)
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=options.series_number + SERIES_NUMBER_OFFSET,
            sop_instance_uid=job_uid(job_key, "fallback", "instance", number),
            instance_number=number,
            manufacturer=options.manufacturer,
            patient_orientation=orientation,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=description,
        )
        image.BurnedInAnnotation = "YES"
        image.RecognizableVisualFeatures = "NO"
        image.ImageComments = (
            f"Derived image: segment outlines by pacsnode pipeline {result.pipeline} {result.version} on a key "
            "slice of the source series. Not for primary diagnosis; read the source images."
        )[:10240]
        image.DerivationDescription = f"Key slice {key.index + 1} of the source series with segment outlines"
        image.SourceImageSequence = [_source_reference(volume, key.index)]
        image.LossyImageCompression = "00"
        if "Laterality" not in image:
            image.Laterality = source.get("Laterality", "")  # Type 2C: empty says "unknown / unpaired"
        images.append(image)
    logger.info(
        "job %s: fallback of series %s: %d key slices %s", job_key, volume.datasets[0].SeriesInstanceUID, len(keys),
        [k.index for k in keys],
    )
    return images


def _code(item: Dataset) -> Code:
    """A code sequence item as a :class:`Code`."""
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning))


def result_from_seg(seg_path: Path, volume: Volume) -> PipelineResult:
    """The segments of a SEG pacsnode wrote for ``volume``, as the result the fallback is drawn from.

    For a job whose fallback was not built with its results (no destination asked for it) and a destination
    that refuses SEG. The masks read back are the ones the SEG holds: the pipeline's own for BINARY SEGs; where
    segments overlap in a LABELMAP SEG, the highest segment number's, as the SEG itself shows them.
    """
    seg = hd.seg.segread(seg_path)
    numbers = [int(item.SegmentNumber) for item in seg.SegmentSequence]
    if volume.frame_numbers is None:
        pixels = seg.get_pixels_by_source_instance(
            [str(ds.SOPInstanceUID) for ds in volume.datasets], segment_numbers=numbers, skip_overlap_checks=True
        )
    else:
        pixels = seg.get_pixels_by_source_frame(
            str(volume.datasets[0].SOPInstanceUID), source_frame_numbers=volume.frame_numbers,
            segment_numbers=numbers, skip_overlap_checks=True,
        )
    segments = []
    for index, item in enumerate(seg.SegmentSequence):
        category, kind = item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0]
        segments.append(Segment(
            number=int(item.SegmentNumber),
            label=str(item.SegmentLabel),
            category=_code(category),
            type=_code(kind),
            mask=pixels[..., index] > 0,
        ))
    family = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0]
    return PipelineResult(
        pipeline=str(seg.ManufacturerModelName),
        version=str(seg.SoftwareVersions),
        algorithm_family=_code(family),
        segments=segments,
    )
