"""Key Object Selection (TID 2010, title "Of Interest") flagging the key slices of a job's results.

A PACS that shows key images lists these slices with the study: each segment's key slice (its largest
area), the slice each finding is drawn on, and the images that image-level classifications concern. They are
the same slices the SR's regions reference.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pipelines.results.locations import finding_graphic, key_slice
from pipelines.results.seg import source_images
from pipelines.results.sr import device_observer
from pipelines.settings import ResultOptions
from pipelines.types import PipelineResult, Volume

KOS_SERIES_OFFSET = 2
"""The KOS series number is ``results.series_number`` plus this (the SEG has it plus 0, the SR plus 1)."""


def key_slices(volume: Volume, result: PipelineResult) -> list[int]:
    """Slice indices (on ``volume``) of every segment's key slice, every finding's and every image-level
    classification's image, in slice order without repeats."""
    segments = {segment.number: segment for segment in result.segments}
    found = {key_slice(segment) for segment in result.segments if not segment.empty}
    for finding in result.findings:
        segment = segments.get(finding.segment_number) if finding.segment_number else None
        found.add(finding_graphic(volume, finding, segment).k)
    found |= {c.slice_index for c in result.classifications if c.scope == "image" and c.slice_index is not None}
    return sorted(found)


def build_key_objects(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    *,
    series_uid: str,
    sop_instance_uid: str,
) -> hd.ko.KeyObjectSelectionDocument | None:
    """The KOS of ``result``'s key slices on ``volume``; None when the result has none."""
    slices = key_slices(volume, result)
    if not slices:
        return None
    images = source_images(volume)
    if volume.frame_numbers is not None:  # a multi-frame source: the one instance holds every key slice
        selected: list[Dataset] = images[:1]
    else:
        selected = [images[k] for k in slices]
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=selected,
        observer_device_context=device_observer(result, options),
        description=f"Key slices of {result.pipeline} {result.version} results"[:1024],
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=images,
        content=content,
        series_instance_uid=series_uid,
        series_number=options.series_number + KOS_SERIES_OFFSET,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=options.manufacturer,
        series_description=f"{options.series_description_prefix} {result.pipeline} key images"[:64],
    )
