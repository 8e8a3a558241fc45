"""Result objects of a job: a DICOM SEG of the segments, a TID 1500 SR of measurements and findings, and on
request a Key Object Selection of the key slices and Secondary Capture fallback images.

Writers know nothing of models: a Volume and a PipelineResult in, DICOM files out. UIDs derive from the
job key, so a re-run writes objects that replace the earlier ones in PACS.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

from pipelines.durable import atomic_file
from pipelines.results import encoding
from pipelines.results.fallback import build_fallback
from pipelines.results.header import with_valid_headers
from pipelines.results.kos import build_key_objects
from pipelines.results.seg import build_segmentation
from pipelines.results.sr import build_report
from pipelines.results.uids import job_uid, result_uids, tracking_uid
from pipelines.settings import ResultOptions
from pipelines.types import PipelineResult, Volume

logger = logging.getLogger(__name__)

LABELMAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
RESULT_SOP_CLASSES: dict[str, tuple[str, ...]] = {
    "seg": (SegmentationStorage, LABELMAP_SEGMENTATION_STORAGE),
    "sr": (Comprehensive3DSRStorage,),
    "kos": (KeyObjectSelectionDocumentStorage,),
    "fallback": (SecondaryCaptureImageStorage,),
}
"""The SOP classes each kind of result object is written as (the names a destination's ``outputs`` lists)."""


@dataclass(frozen=True)
class WrittenResult:
    """One result object written to disk."""

    kind: str  # "seg", "sr", "kos" or "fallback-N" (the N-th Secondary Capture key slice)
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    size_bytes: int


def write_dataset(dataset: Dataset, path: Path) -> int:
    """Write ``dataset`` as a DICOM file (preamble and file meta) atomically and durably; its size.

    The file and then its folder are fsynced, so a result the index records survives a crash of the node.
    """
    with atomic_file(path) as handle:
        encoding.save(dataset, handle)
    return path.stat().st_size


def _written(kind: str, dataset: Dataset, path: Path) -> WrittenResult:
    size = write_dataset(dataset, path)
    return WrittenResult(
        kind=kind,
        path=path,
        sop_class_uid=str(dataset.SOPClassUID),
        sop_instance_uid=str(dataset.SOPInstanceUID),
        series_uid=str(dataset.SeriesInstanceUID),
        study_uid=str(dataset.StudyInstanceUID),
        size_bytes=size,
    )


def write_results(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    job_key: str,
    out_dir: Path,
    *,
    fallback: bool = True,
    key_objects: bool = False,
    timings: dict[str, float] | None = None,
    replaces: str | None = None,
) -> list[WrittenResult]:
    """Write the SEG (if there are segments) and the SR (if there is anything to report) into ``out_dir``.

    With segments, ``fallback`` and ``options.fallback_key_slices``, also the Secondary Capture key slices for
    viewers without SEG (``fallback-1.dcm``..., see ``write_fallback``). With ``key_objects``, also a Key
    Object Selection of the key slices (``kos.dcm``) when there are any. Files are named ``seg.dcm`` and
    ``sr.dcm``; the same ``job_key`` always gives the same UIDs. ``timings``, when given, receives the seconds
    of each step (``seg_build``, ``seg_write``, ``sr``, ``kos``, ``fallback``). ``replaces``, for a re-run, says
    in the SR which earlier report it replaces. Raises ValueError when the result does not fit the volume.
    """
    steps = timings if timings is not None else {}
    out_dir = Path(out_dir)
    volume = valid_headers(volume, job_key)
    segment_tracking = [tracking_uid(job_key, s.number) for s in sorted(result.segments, key=lambda s: s.number)]
    written: list[WrittenResult] = []
    seg = None
    if result.segments:
        seg, written_seg = _write_segmentation(volume, result, options, job_key, out_dir, segment_tracking, steps)
        written.append(written_seg)
    if result.segments or result.findings or result.measurements or result.classifications:
        started = time.perf_counter()
        written.append(_write_report(volume, result, options, job_key, out_dir, segment_tracking, seg, replaces))
        steps["sr"] = time.perf_counter() - started
    if key_objects:
        started = time.perf_counter()
        written.extend(write_key_objects(volume, result, options, job_key, out_dir))
        steps["kos"] = time.perf_counter() - started
    if fallback:
        started = time.perf_counter()
        written.extend(write_fallback(volume, result, options, job_key, out_dir))
        steps["fallback"] = time.perf_counter() - started
    return written


def _write_segmentation(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    job_key: str,
    out_dir: Path,
    segment_tracking: list[str],
    steps: dict[str, float],
) -> tuple[Dataset, WrittenResult]:
    """Build and write the SEG (``seg.dcm``); the dataset (the SR references it) and the file written."""
    uids = result_uids(job_key, "seg")
    started = time.perf_counter()
    seg = build_segmentation(
        volume, result, options, series_uid=uids.series_uid, sop_instance_uid=uids.sop_instance_uid,
        tracking_uids=segment_tracking,
    )
    built = time.perf_counter()
    written = _written("seg", seg, out_dir / "seg.dcm")
    steps["seg_build"], steps["seg_write"] = built - started, time.perf_counter() - built
    logger.info(
        "job %s: SEG %s of series %s, %d segments, %d frames, built in %.2f s, written in %.2f s (%d bytes)",
        job_key, seg.SOPInstanceUID, volume.datasets[0].SeriesInstanceUID, len(result.segments),
        int(seg.NumberOfFrames), steps["seg_build"], steps["seg_write"], written.size_bytes,
    )
    return seg, written


def _write_report(
    volume: Volume,
    result: PipelineResult,
    options: ResultOptions,
    job_key: str,
    out_dir: Path,
    segment_tracking: list[str],
    seg: Dataset | None,
    replaces: str | None = None,
) -> WrittenResult:
    """Write the SR (``sr.dcm``); its groups' tracking UIDs derive from ``job_key``, the segments' are given;
    ``replaces`` says which earlier report it replaces (a re-run)."""
    uids = result_uids(job_key, "sr")
    report = build_report(
        volume,
        result,
        options,
        series_uid=uids.series_uid,
        sop_instance_uid=uids.sop_instance_uid,
        segment_tracking_uids=segment_tracking,
        group_tracking_uids=[job_uid(job_key, "group", index) for index in range(len(result.classifications) + 1)],
        finding_tracking_uids=[job_uid(job_key, "finding", index, "tracking") for index in range(len(result.findings))],
        seg=seg,
        replaces=replaces,
    )
    logger.info("job %s: SR %s of series %s written", job_key, report.SOPInstanceUID,
                volume.datasets[0].SeriesInstanceUID)
    return _written("sr", report, out_dir / "sr.dcm")


def valid_headers(volume: Volume, job_key: str) -> Volume:
    """``volume`` with source headers whose copied patient and study attributes are valid for their VR
    (``pipelines.results.header``); each repair or omission is logged by attribute name, never by value."""
    cleaned, notes = with_valid_headers(volume)
    for note in notes:
        logger.warning("job %s: source header of series %s: %s", job_key, volume.datasets[0].SeriesInstanceUID, note)
    return cleaned


def write_key_objects(
    volume: Volume, result: PipelineResult, options: ResultOptions, job_key: str, out_dir: Path
) -> list[WrittenResult]:
    """Write the Key Object Selection of ``result``'s key slices (``kos.dcm``); none when it has no key slice."""
    volume = valid_headers(volume, job_key)
    uids = result_uids(job_key, "kos")
    selection = build_key_objects(
        volume, result, options, series_uid=uids.series_uid, sop_instance_uid=uids.sop_instance_uid
    )
    return [] if selection is None else [_written("kos", selection, Path(out_dir) / "kos.dcm")]


def write_fallback(
    volume: Volume, result: PipelineResult, options: ResultOptions, job_key: str, out_dir: Path
) -> list[WrittenResult]:
    """Write the Secondary Capture key slices of ``result``'s segments (``fallback-1.dcm``...) into ``out_dir``.

    None without segments or with ``options.fallback_key_slices`` 0. The same ``job_key`` gives the same UIDs,
    whether the images are written with the job's SEG or later, when a destination refuses SEG.
    """
    if not result.segments or not options.fallback_key_slices:
        return []
    volume = valid_headers(volume, job_key)
    images = build_fallback(volume, result, options, job_key=job_key, max_slices=options.fallback_key_slices)
    return [
        _written(f"fallback-{number}", image, Path(out_dir) / f"fallback-{number}.dcm")
        for number, image in enumerate(images, start=1)
    ]
