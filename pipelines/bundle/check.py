"""``pacsnode bundle check``: load a bundle, run it on synthetic volumes, and say how it would be configured.

The bundle loads as a pipeline would (its config, weights, packages, labels); it then runs on two synthetic
volumes of the modality and channels its metadata declares, a small one and one twice as large along each
axis (after a first, uncounted run), with the time and peak memory of each run and each stage. Memory grows
with the voxels of the series, so the largest stage of the larger run, scaled to a 300-slice 512x512 series,
plus that series' volume, is the ``memory_mb`` the printed pipeline entry proposes (with a margin).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pipelines import anatomy
from pipelines.bundle.labels import PRIVATE_SCHEME
from pipelines.bundle.pipeline import BundlePipeline
from pipelines.memory import PeakMemory
from pipelines.settings import PipelineSettings
from pipelines.types import Volume

REFERENCE_SHAPE = (300, 512, 512)
"""The series memory is estimated for: 300 slices of 512x512."""
REFERENCE_SPACING = (0.75, 0.75, 1.25)
"""Column, row and slice spacing (mm) of the synthetic series, as a chest or abdomen CT has."""
SMALL_SHAPE = (40, 96, 96)
WARM_UP_SHAPE = (16, 32, 32)
"""A first run on this tiny volume makes the model's one-time allocations before anything is measured."""
MEMORY_MARGIN = 1.2


@dataclass
class Run:
    """One run on a synthetic volume."""

    shape: tuple[int, int, int]
    seconds: float
    peak_bytes: int
    stages: dict[str, tuple[float, int]]
    """Stage -> (seconds, peak bytes above the stage's start)."""
    segments: int
    gpu_peak_bytes: int = 0


@dataclass
class CheckReport:
    """What ``bundle check`` found."""

    name: str
    bundle_dir: Path
    task: str
    modalities: list[str]
    channels: list[str]
    device: str
    load_seconds: float
    load_peak_bytes: int
    labels: list[tuple[int, str, str]] = field(default_factory=list)
    """(value, label, codes as text)"""
    uncoded: list[tuple[int, str, list[str]]] = field(default_factory=list)
    """(value, the bundle's name, nearest known names)"""
    warnings: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)

    def estimated_peak_bytes(self) -> int:
        """Peak memory of a job on a 300-slice 512x512 series: the loaded volume (float32) and the largest stage,
        each stage's peak followed along the line through its two runs (what grows with the voxels, beside what
        the model takes whatever the series' size); with one run, its peaks scaled by the voxel count."""
        if not self.runs:
            return 0
        reference = math.prod(REFERENCE_SHAPE)
        runs = sorted(self.runs, key=lambda run: math.prod(run.shape))
        small, large = runs[0], runs[-1]
        low, high = math.prod(small.shape), math.prod(large.shape)
        stages = []
        for stage, (_, peak) in large.stages.items():
            if high == low:
                stages.append(peak * reference / high)
                continue
            slope = max(0.0, (peak - small.stages.get(stage, (0.0, 0))[1]) / (high - low))
            stages.append(max(peak, peak + slope * (reference - high)))
        return int(4 * reference + max(stages, default=large.peak_bytes))

    def entry(self) -> dict[str, Any]:
        """The ``pipelines:`` entry that runs this bundle as it was checked."""
        entry: dict[str, Any] = {"name": self.name, "bundle_dir": str(self.bundle_dir), "task": self.task,
                                 "modalities": self.modalities}
        if self.overrides:
            entry["overrides"] = self.overrides
        if self.channels:
            entry["channels"] = self.channels
        if self.runs:
            entry["memory_mb"] = int(math.ceil(self.estimated_peak_bytes() * MEMORY_MARGIN / 2**20))
        return entry


def declared_task(metadata: dict[str, Any]) -> str:
    """segmentation, classification or detection, from the format of the bundle's first output."""
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    for spec in outputs.values():
        kind = f"{spec.get('type', '')} {spec.get('format', '')}".lower() if isinstance(spec, dict) else ""
        if "segmentation" in kind:
            return "segmentation"
        if "object" in kind or "dict" in kind or "detection" in kind:
            return "detection"
        if "classification" in kind or "probabilit" in kind:
            return "classification"
    return "segmentation"


def declared_modality(metadata: dict[str, Any]) -> str:
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    for spec in inputs.values():
        if isinstance(spec, dict) and spec.get("modality"):
            return str(spec["modality"]).upper()
    return "CT"


def synthetic_volume(shape: tuple[int, int, int], modality: str, channels: list[str], seed: int = 0) -> Volume:
    """A body-like ellipsoid with organ-like spheres in it ([k, j, i]); CT in HU, MR in arbitrary units; one
    array per named channel when the model takes several series."""
    rng = np.random.default_rng(seed)
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    centre = [(n - 1) / 2 for n in shape]
    radial = ((k - centre[0]) / (0.48 * shape[0])) ** 2 + ((j - centre[1]) / (0.35 * shape[1])) ** 2 \
        + ((i - centre[2]) / (0.45 * shape[2])) ** 2
    ct = modality == "CT"
    array = np.where(radial <= 1.0, 40.0 if ct else 300.0, -1000.0 if ct else 0.0).astype(np.float32)
    for index, (fk, fj, fi, value) in enumerate([(0.5, 0.45, 0.3, 120.0), (0.5, 0.5, 0.7, -850.0), (0.6, 0.6, 0.5, 300.0)]):
        sphere = ((k - fk * shape[0]) ** 2 + (j - fj * shape[1]) ** 2 + (i - fi * shape[2]) ** 2) <= (0.12 * shape[2]) ** 2
        array[sphere & (radial <= 1.0)] = value if ct else 150.0 * (index + 2)
    array += rng.normal(0.0, 10.0, size=shape).astype(np.float32)
    affine = np.diag([*REFERENCE_SPACING, 1.0])
    header = Dataset()
    header.Modality, header.SeriesInstanceUID, header.SOPInstanceUID = modality, generate_uid(), generate_uid()
    volume = Volume(array, affine, [header])
    if len(channels) > 1:
        volume.channels = {name: np.roll(array, 3 * n, axis=2) for n, name in enumerate(channels)}
    return volume


def _run(pipeline: BundlePipeline, volume: Volume) -> Run:
    pipeline.measure_memory = True
    if torch.cuda.is_available() and pipeline.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipeline.device)
    started = time.perf_counter()
    with PeakMemory() as peak:
        result = pipeline.run(volume)
    seconds = time.perf_counter() - started
    gpu = torch.cuda.max_memory_allocated(pipeline.device) if pipeline.device.type == "cuda" else 0
    stages = {stage: (result.timings.get(stage, 0.0), pipeline.stage_peaks.get(stage, 0)) for stage in result.timings}
    found = len(result.segments) + len(result.findings) + len(result.classifications)
    return Run(tuple(volume.array.shape), seconds, peak.bytes, stages, found, gpu)  # type: ignore[arg-type]


def check_bundle(bundle_dir: Path, *, name: str = "", task: str = "", overrides: dict[str, Any] | None = None,
                 device: str = "", shapes: list[tuple[int, int, int]] | None = None) -> CheckReport:
    """Load and run the bundle; raises BundleError / BundleRunError when it cannot load or run."""
    bundle_dir = Path(bundle_dir).resolve()
    from pipelines.bundle.config import BundleConfig

    metadata = BundleConfig(bundle_dir, overrides=overrides).metadata
    modality = declared_modality(metadata)
    settings = PipelineSettings(name=name or bundle_dir.name, bundle_dir=bundle_dir, task=task or declared_task(metadata),
                                modalities=[modality], overrides=overrides or {}, device=device)
    started = time.perf_counter()
    with PeakMemory() as peak:
        pipeline = BundlePipeline(settings)
    report = CheckReport(settings.name, bundle_dir, settings.task, [modality], pipeline.channels, str(pipeline.device),
                         time.perf_counter() - started, peak.bytes, overrides=dict(overrides or {}),
                         warnings=[*pipeline.requirements.warnings, *pipeline.requirements.notes])
    for value, (label, category, kind, modifier) in sorted(pipeline.labels.labels.items()):
        text = f"{category.meaning} / {kind.value} {kind.scheme} {kind.meaning}" + (f" ({modifier.meaning})" if modifier else "")
        report.labels.append((value, label, text))
        if kind.scheme == PRIVATE_SCHEME:
            report.uncoded.append((value, pipeline.labels.uncoded.get(value, label), anatomy.suggestions(label)))
    pipeline.run(synthetic_volume(WARM_UP_SHAPE, modality, pipeline.channels))  # one-time allocations, not counted
    for shape in shapes or [SMALL_SHAPE, tuple(2 * n for n in SMALL_SHAPE)]:
        report.runs.append(_run(pipeline, synthetic_volume(shape, modality, pipeline.channels)))  # type: ignore[arg-type]
    return report
