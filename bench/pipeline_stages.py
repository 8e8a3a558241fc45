"""Seconds and peak memory of each stage of a job on a 300-slice 512x512 CT phantom.

Stages: volume load, inference per built-in pipeline, SEG build and write, SR build and write; then the SEG
size in each form (BINARY with and without empty frames, LABELMAP, compressed). The bar: all non-inference
stages together under 2 s and their peak memory under 3x the volume's size.

Every stage is measured in a warm process (a worker's second job onwards): the sample series is loaded and a
two-slice SEG and SR are built first, so one-time imports and highdicom's loading of its standard tables
(about 1 s) are not counted. CPU seconds are
given beside wall seconds because the cores may be shared.

Peak memory is the process's resident set size sampled every 2 ms, above what it was when the stage began
(tracemalloc would miss torch's allocations and slow highdicom's many small objects).

Run: ``python -m bench.pipeline_stages [--data DIR] [--pipelines ct-tissue ct-lungs] [--json OUT]``.
The phantom is written into ``--data`` once (about a minute) and reused.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import many_segments
from node.config import QueueConfig
from pipelines.bundle import BundlePipeline
from pipelines.memory import PeakMemory
from pipelines.settings import PipelineSettings, ResultOptions
from pipelines.upstream.numpy_hugepages import use_hugepages
from pipelines.registry import create_pipeline
from pipelines.results import write_dataset
from pipelines.results.seg import build_segmentation
from pipelines.results.sr import build_report
from pipelines.results.uids import job_uid, result_uids, tracking_uid
from pipelines.types import Measurement, PipelineResult, Segment, Volume
from pipelines.volume import load_series
from sample_dicom.generate import BENCHMARK, write_phantom

SAMPLE_SERIES = sorted((Path(__file__).resolve().parents[1] / "sample_dicom" / "chest_ct").glob("*.dcm"))
BAR_SECONDS = 2.0
BAR_VOLUME_MULTIPLE = 3.0


@dataclass
class Stage:
    """One measured stage."""

    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_bytes: int = 0
    inference: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


@contextmanager
def measure(stages: list[Stage], name: str, *, inference: bool = False) -> Iterator[Stage]:
    """Time the block and sample its resident memory above the level at its start."""
    gc.collect()
    stage = Stage(name, inference=inference)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        with PeakMemory() as peak:
            yield stage
    finally:
        stage.seconds = time.perf_counter() - started
        stage.cpu_seconds = time.process_time() - cpu_started
        stage.peak_bytes = peak.bytes
        stages.append(stage)


def phantom(data_dir: Path) -> list[Path]:
    """The benchmark series in ``data_dir``, written on first use."""
    paths = sorted(data_dir.glob("CT_*.dcm"))
    if len(paths) == BENCHMARK.shape[0]:
        return paths
    print(f"writing the {BENCHMARK.shape} phantom to {data_dir} ...", flush=True)
    return write_phantom(data_dir, BENCHMARK, series="benchmark")


def write_stages(
    stages: list[Stage], volume: Volume, result: PipelineResult, options: ResultOptions, job_key: str, out: Path
) -> None:
    """SEG build, SEG write, SR build, SR write of one result, each measured."""
    numbers = [s.number for s in sorted(result.segments, key=lambda s: s.number)]
    tracking = [tracking_uid(job_key, n) for n in numbers]
    seg_uids, sr_uids = result_uids(job_key, "seg"), result_uids(job_key, "sr")
    with measure(stages, f"{result.pipeline}: SEG build") as stage:
        seg = build_segmentation(
            volume, result, options, series_uid=seg_uids.series_uid,
            sop_instance_uid=seg_uids.sop_instance_uid, tracking_uids=tracking,
        )
        stage.notes.update(segments=len(numbers), frames=int(seg.NumberOfFrames))
    with measure(stages, f"{result.pipeline}: SEG write") as stage:
        stage.notes["bytes"] = write_dataset(seg, out / f"{result.pipeline}-seg.dcm")
    with measure(stages, f"{result.pipeline}: SR build"):
        report = build_report(
            volume, result, options, series_uid=sr_uids.series_uid, sop_instance_uid=sr_uids.sop_instance_uid,
            segment_tracking_uids=tracking,
            group_tracking_uids=[job_uid(job_key, "group", i) for i in range(len(result.classifications) + 1)],
            seg=seg,
        )
    with measure(stages, f"{result.pipeline}: SR write") as stage:
        stage.notes["bytes"] = write_dataset(report, out / f"{result.pipeline}-sr.dcm")


SEG_FORMS: dict[str, dict[str, Any]] = {
    "BINARY, empty frames kept": {"seg_type": "binary", "omit_empty_frames": False},
    "BINARY, empty frames omitted": {"seg_type": "binary", "omit_empty_frames": True},
    "LABELMAP": {"seg_type": "labelmap"},
    "LABELMAP, RLE lossless": {"seg_type": "labelmap", "compress": True},
    "BINARY, JPEG 2000 lossless": {"seg_type": "binary", "compress": True},
}


def seg_forms(volume: Volume, result: PipelineResult, out: Path, forms: list[str]) -> list[dict[str, Any]]:
    """Build and write the SEG of ``result`` in each form: size, seconds, frames."""
    rows = []
    for form in forms:
        options = ResultOptions(**SEG_FORMS[form])
        uids = result_uids(f"bench-{form}", "seg")
        started = time.perf_counter()
        seg = build_segmentation(
            volume, result, options, series_uid=uids.series_uid, sop_instance_uid=uids.sop_instance_uid,
            tracking_uids=[tracking_uid("bench", s.number) for s in result.segments],
        )
        built = time.perf_counter()
        size = write_dataset(seg, out / "form-seg.dcm")
        rows.append({
            "form": form, "build_s": built - started, "write_s": time.perf_counter() - built,
            "frames": int(seg.NumberOfFrames), "megabytes": size / 1e6,
        })
        del seg
    return rows


def truth_result(volume: Volume, data_dir: Path) -> PipelineResult:
    """ct-tissue's four overlapping segments taken from the phantom's ground truth (no inference)."""
    from pipelines import codes
    from sample_dicom.generate import BODY_LABELS, BONE, FAT

    labels = np.load(data_dir / "ground_truth.npz")["labels"]
    body = np.isin(labels, BODY_LABELS)
    air = body & (volume.array < -500)
    masks = [("Body", codes.ENTIRE_BODY, body), ("Bone", codes.BONE, labels == BONE),
             ("Adipose tissue", codes.ADIPOSE_TISSUE, labels == FAT), ("Air inside the body", codes.GAS, air)]
    segments = [Segment(n, label, codes.ANATOMICAL_STRUCTURE, kind, mask) for n, (label, kind, mask) in enumerate(masks, 1)]
    measurements = [Measurement(codes.VOLUME, s.voxel_count * volume.voxel_volume_ml, codes.MILLILITER, s.number)
                    for s in segments]
    return PipelineResult("phantom-truth", "1", codes.ARTIFICIAL_INTELLIGENCE, segments, measurements)


def warm_up(volume: Volume, result: PipelineResult, out: Path) -> None:
    """Build a SEG and SR of two slices once, as a worker has by its second job (highdicom loads its tables)."""
    small = Volume(volume.array[:2], volume.affine, volume.datasets[:2])
    small_result = PipelineResult(
        result.pipeline, result.version, result.algorithm_family,
        [Segment(s.number, s.label, s.category, s.type, s.mask[:2]) for s in result.segments],
        result.measurements, result.classifications,
    )
    write_stages([], small, small_result, ResultOptions(), "bench/warm-up", out)


BUNDLES = {"many-segments": many_segments}
"""Bundles the benchmark writes and runs: module -> ``write_bundle(dir)`` and the pipeline's ``OVERRIDES``."""


def run_bundle(stages: list[Stage], name: str, volume: Volume, scratch: Path) -> PipelineResult:
    """Run a bundle the benchmark writes; its run as one stage, then each of its own stages with its peak."""
    module = BUNDLES[name]
    bundle_dir = module.write_bundle(scratch / name)
    pipeline = BundlePipeline(PipelineSettings(name=name, bundle_dir=bundle_dir, overrides=module.OVERRIDES))
    pipeline.measure_memory = True
    with measure(stages, f"{name}: bundle run", inference=True) as stage:
        result = pipeline.run(volume)
        stage.notes["segments"] = len(result.segments)
    for part, seconds in result.timings.items():
        own = part == "results"  # pacsnode's part: the prediction made segments and measurements
        stages.append(Stage(f"{name}: {'segments from the prediction' if own else 'bundle ' + part}", seconds=seconds,
                            peak_bytes=pipeline.stage_peaks[part], inference=not own, notes={"within": "bundle run"}))
    return result


def run(data_dir: Path, pipelines: list[str], forms: list[str], bundles: list[str] | None = None) -> dict[str, Any]:
    """Measure every stage; the report as a dict."""
    paths = phantom(data_dir)
    stages: list[Stage] = []
    options = ResultOptions()
    with tempfile.TemporaryDirectory(prefix="pacsnode-bench-") as scratch:
        out = Path(scratch)
        load_series(SAMPLE_SERIES)  # a worker's first job loads pydicom's and numpy's lazy parts; not counted
        with measure(stages, "volume load") as stage:
            volume = load_series(paths)
        volume_bytes = volume.array.nbytes
        stage.notes["shape"] = list(volume.array.shape)
        results = []
        for name in pipelines:
            pipeline = create_pipeline(name)
            with measure(stages, f"{name}: inference", inference=True) as stage:
                result = pipeline.run(volume)
                stage.notes["segments"] = [s.label for s in result.segments]
            results.append(result)
        for name in bundles or []:
            results.append(run_bundle(stages, name, volume, out))
        if not results:
            results.append(truth_result(volume, data_dir))
        warm_up(volume, results[0], out)
        for result in results:
            write_stages(stages, volume, result, options, f"bench/{result.pipeline}", out)
        sizes = seg_forms(volume, results[0], out, forms) if results and forms else []

    verdicts = []
    for result in results:
        own = [s for s in stages if not s.inference and (s.name == "volume load" or s.name.startswith(result.pipeline))]
        seconds = sum(s.seconds for s in own)
        cpu_seconds = sum(s.cpu_seconds for s in own)
        peak = max(s.peak_bytes for s in own)
        verdicts.append({
            "pipeline": result.pipeline,
            "non_inference_seconds": seconds,
            "non_inference_cpu_seconds": cpu_seconds,
            "peak_bytes": peak,
            "volume_bytes": volume_bytes,
            "meets_time_bar": seconds < BAR_SECONDS,
            "meets_time_bar_in_cpu_seconds": cpu_seconds < BAR_SECONDS,
            "meets_memory_bar": peak < BAR_VOLUME_MULTIPLE * volume_bytes,
        })
    return {"stages": [asdict(s) for s in stages], "seg_forms": sizes, "verdicts": verdicts}


def print_report(report: dict[str, Any], print_: Callable[[str], None] = print) -> None:
    print_(f"{'stage':<34} {'seconds':>8} {'CPU s':>8} {'peak MB':>8}  notes")
    for stage in report["stages"]:
        notes = ", ".join(f"{k}={v}" for k, v in stage["notes"].items())
        print_(
            f"{stage['name']:<34} {stage['seconds']:8.3f} {stage['cpu_seconds']:8.3f} "
            f"{stage['peak_bytes'] / 1e6:8.0f}  {notes}"
        )
    if report["seg_forms"]:
        print_(f"\n{'SEG form':<30} {'build s':>8} {'write s':>8} {'frames':>7} {'MB':>7}")
        for row in report["seg_forms"]:
            print_(f"{row['form']:<30} {row['build_s']:8.3f} {row['write_s']:8.3f} {row['frames']:7d} {row['megabytes']:7.1f}")
    for verdict in report["verdicts"]:
        print_(
            f"\n{verdict['pipeline']}: non-inference stages {verdict['non_inference_seconds']:.2f} s wall "
            f"(bar {BAR_SECONDS} s: {'met' if verdict['meets_time_bar'] else 'MISSED'}), "
            f"{verdict['non_inference_cpu_seconds']:.2f} s CPU "
            f"({'met' if verdict['meets_time_bar_in_cpu_seconds'] else 'MISSED'}), peak "
            f"{verdict['peak_bytes'] / 1e6:.0f} MB = {verdict['peak_bytes'] / verdict['volume_bytes']:.2f}x the "
            f"{verdict['volume_bytes'] / 1e6:.0f} MB volume (bar {BAR_VOLUME_MULTIPLE}x: "
            f"{'met' if verdict['meets_memory_bar'] else 'MISSED'})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "pacsnode-bench-phantom")
    parser.add_argument(
        "--pipelines", nargs="*", default=["ct-tissue", "ct-lungs"],
        help="built-in pipelines to run; none: ct-tissue's segments from the phantom's truth, no inference",
    )
    parser.add_argument("--bundles", nargs="*", default=list(BUNDLES), choices=list(BUNDLES),
                        help="bundles the benchmark writes and runs (many-segments: 104 segments)")
    parser.add_argument("--forms", nargs="*", default=list(SEG_FORMS), choices=list(SEG_FORMS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    use_hugepages(QueueConfig().numpy_hugepages)  # as a worker process does
    report = run(args.data, args.pipelines, args.forms, args.bundles)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
