"""What the demo shows about a finished run: stage timings, segment volumes, findings, PNG previews.

Reads only what the node wrote (its index, the SEG and SR files), so the demo reports the real results.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw
from sqlalchemy import select

from node.db import Database, Delivery, Job, ResultObject, Series
from pipelines.results.render import LUNG_WINDOW, draw_segments, greyscale, seg_colours, window_of
from pipelines.types import Volume

WINDOWS = {"ct-lungs": LUNG_WINDOW}  # (centre, width); others use the slice's own window


@dataclass
class SegmentInfo:
    number: int
    label: str
    volume_ml: float
    colour: tuple[int, int, int]


@dataclass
class JobReport:
    """One pipeline's run over the series, as the index and its result files tell it."""

    job_id: int
    pipeline: str
    state: str
    reason: str | None
    stages: dict[str, float]
    segments: list[SegmentInfo] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)  # (concept, value) from the SR
    deliveries: list[tuple[str, str, str, str]] = field(default_factory=list)  # kind, destination, state, status
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    previews: list[Path] = field(default_factory=list)


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def series_stages(database: Database, series_uid: str) -> dict[str, float]:
    """Receive (first to last instance) and quiet period (last instance to complete) of the series."""
    with database.session() as session:
        series = session.get(Series, series_uid)
    if series is None:
        return {}
    stages = {"receive": _seconds(series.first_received_at, series.last_received_at),
              "assemble (quiet period)": _seconds(series.last_received_at, series.completed_at)}
    return {k: v for k, v in stages.items() if v is not None}


def _sr_findings(path: Path) -> list[tuple[str, str]]:
    """Coded evaluations of the SR's measurement groups (e.g. 'Pulmonary emphysema: Absent')."""
    skip = {"Finding category", "Finding", "Algorithm Name", "Algorithm Version"}
    found: list[tuple[str, str]] = []

    def walk(items: pydicom.Sequence, in_group: bool) -> None:
        for item in items:
            concept = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if in_group and item.ValueType == "CODE" and concept not in skip:
                found.append((str(concept), str(item.ConceptCodeSequence[0].CodeMeaning)))
            if "ContentSequence" in item:
                walk(item.ContentSequence, in_group or concept == "Measurement Group")

    walk(pydicom.dcmread(path).ContentSequence, False)
    return found


def _seg_masks(path: Path, volume: Volume) -> tuple[dict[int, np.ndarray], dict[int, str], dict[int, tuple]]:
    """The SEG's masks on the volume's grid (slices in the volume's order), segment labels and colours."""
    seg = hd.seg.segread(path)
    numbers = list(seg.segment_numbers)
    source = [str(ds.SOPInstanceUID) for ds in volume.datasets]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=source, segment_numbers=numbers,
                                               assert_missing_frames_are_empty=True)
    masks = {n: pixels[..., i].astype(bool) for i, n in enumerate(numbers)}
    labels = {n: seg.get_segment_description(n).segment_label for n in numbers}
    return masks, labels, seg_colours(seg)


def job_reports(database: Database, series_uid: str, volume: Volume) -> list[JobReport]:
    """A report per job of the series: stage timings, segments with volumes, SR findings, deliveries."""
    voxel_ml = abs(float(np.linalg.det(volume.affine[:3, :3]))) / 1000.0
    reports = []
    with database.session() as session:
        jobs = session.scalars(select(Job).where(Job.series_uid == series_uid).order_by(Job.id)).all()
        for job in jobs:
            timings = dict(job.timings or {})
            stages = {"queue wait": timings.get("queue_wait", _seconds(job.queued_at, job.started_at) or 0.0)}
            for key, label in (("load", "load"), ("infer", "inference"), ("write", "write SEG + SR")):
                if key in timings:
                    stages[label] = float(timings[key])
            report = JobReport(job.id, job.pipeline, job.state.value, job.reason, stages)
            results = session.scalars(select(ResultObject).where(ResultObject.job_id == job.id)).all()
            delivered_at = []
            for result in results:
                for delivery in session.scalars(select(Delivery).where(Delivery.result_id == result.id)).all():
                    report.deliveries.append((result.kind, delivery.destination, delivery.state.value,
                                              delivery.last_status or delivery.error or ""))
                    if delivery.delivered_at is not None:
                        delivered_at.append((result.created_at, delivery.delivered_at))
                if result.kind == "seg":
                    masks, labels, colours = _seg_masks(Path(result.path), volume)
                    report.masks = masks
                    report.segments = [
                        SegmentInfo(n, labels[n], float(m.sum()) * voxel_ml, colours[n]) for n, m in masks.items()
                    ]
                elif result.kind == "sr":
                    report.findings = _sr_findings(Path(result.path))
            if delivered_at:
                start = min(created for created, _ in delivered_at)
                report.stages["delivery"] = _seconds(start, max(at for _, at in delivered_at)) or 0.0
            reports.append(report)
    return reports


def write_previews(report: JobReport, volume: Volume, out_dir: Path, count: int = 2) -> list[Path]:
    """PNGs of the key slices (largest segmented area, and the middle of the segmented range), segments overlaid."""
    if not report.masks:
        return []
    union = np.zeros(volume.array.shape, dtype=bool)
    for mask in report.masks.values():
        union |= mask
    area = union.reshape(union.shape[0], -1).sum(axis=1)
    if not area.any():
        return []
    occupied = np.flatnonzero(area)
    keys = [int(np.argmax(area)), int(occupied[len(occupied) // 2])]
    keys = list(dict.fromkeys(keys))[:count]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in keys:
        plane = volume.array[k]
        source = volume.datasets[k if volume.frame_numbers is None else 0]
        window = WINDOWS.get(report.pipeline) or window_of(source, plane)
        # Largest segments first, so that smaller ones inside them (bone in body) stay visible on top.
        drawn = [(report.masks[info.number][k], info.colour) for info in sorted(report.segments, key=lambda s: -s.volume_ml)]
        rgb = draw_segments(greyscale(plane, window), drawn)
        image = Image.fromarray(rgb).resize((plane.shape[1] * 3, plane.shape[0] * 3), Image.NEAREST)
        canvas = Image.new("RGB", (image.width + 190, max(image.height, 20 * len(report.segments) + 30)), "black")
        canvas.paste(image, (0, 0))
        draw = ImageDraw.Draw(canvas)
        draw.text((image.width + 10, 6), f"{report.pipeline}, slice {k + 1}", fill="white")
        for row, info in enumerate(report.segments):
            y = 28 + 20 * row
            draw.rectangle([image.width + 10, y, image.width + 24, y + 12], fill=info.colour)
            draw.text((image.width + 30, y), info.label[:24], fill="white")
        path = out_dir / f"{report.pipeline}-slice{k + 1:03d}.png"
        canvas.save(path)
        paths.append(path)
    report.previews = paths
    return paths
