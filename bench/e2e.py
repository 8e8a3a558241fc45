"""End-to-end benchmark: a study sent to pacsnode in one association, SEG and SR acknowledged by Orthanc.

With the node's **default configuration**, the figure of merit is the time from the last C-STORE response of
the sending association to the last of a job's SEG and SR stored in Orthanc, for the sample study (72 slices)
and the 300-slice phantom, as the median of several runs (each run sends a fresh copy: new UIDs). Beside it,
the same study from a sender the node treats with the quiet period (``senders: [{completion: {mode:
quiet}}]``, the default 60 s), as completion worked before it came from evidence. Goal: under 5 s plus the
pipeline's own inference time, and at least 10x faster than the quiet period beyond that inference time.

    python -m bench.e2e [--runs 3] [--quiet-runs 1] [--concurrency 2] [--pipelines ct-tissue ct-lungs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402
from sqlalchemy import select  # noqa: E402

from node.db import Delivery, DeliveryState, Job, JobState, ResultObject, Series  # noqa: E402
from node.demo.local_pacs import Orthanc  # noqa: E402
from node.dicom.scu import send_objects  # noqa: E402
from sample_dicom.generate import BENCHMARK, write_phantom  # noqa: E402
from tests.support.node_process import NodeProcess, free_port  # noqa: E402

CACHE = REPO / "bench" / "out" / "phantom300"
SAMPLE = REPO / "sample_dicom" / "chest_ct"
PIPELINES = ["ct-tissue", "ct-lungs"]
FAST_SENDER, QUIET_SENDER = "BENCH", "BENCH_QUIET"
GOAL_BEYOND_INFERENCE = 5.0
GOAL_SPEED_UP = 10.0


def phantom_files() -> list[Path]:
    """The 300-slice 512x512 phantom, generated once and cached under bench/out."""
    files = sorted(CACHE.glob("*.dcm")) if CACHE.is_dir() else []
    if len(files) != BENCHMARK.shape[0]:
        files = sorted(write_phantom(CACHE, BENCHMARK, series="benchmark"))
    return files


def fresh_copy(files: list[Path], folder: Path) -> tuple[list[Path], str]:
    """``files`` as a new study and series (new UIDs), so that each run is a first arrival; the series UID."""
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    copies = []
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copies.append(folder / f"{index:04d}.dcm")
        ds.save_as(copies[-1], enforce_file_format=True)
    return copies, series_uid


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float:
    return (b - a).total_seconds() if a and b else float("nan")


@dataclass(frozen=True)
class JobRun:
    """One job of one run: seconds from the last C-STORE response to its results stored, and of what."""

    pipeline: str
    end_to_end: float
    completion: float  # last response -> series complete
    inference: float
    completed_by: str
    stages: dict[str, float]  # where the time beyond completion went

    @property
    def beyond_inference(self) -> float:
        return self.end_to_end - self.inference


def _settled(node: NodeProcess, series_uid: str, pipelines: list[str]) -> bool:
    with node.database.session() as session:
        jobs = session.scalars(select(Job).where(Job.series_uid == series_uid)).all()
        if len(jobs) < len(pipelines) or any(j.state not in (JobState.succeeded, JobState.failed) for j in jobs):
            return False
        states = session.scalars(select(Delivery.state).join(ResultObject, ResultObject.id == Delivery.result_id)
                                 .where(ResultObject.job_id.in_([j.id for j in jobs]))).all()
        return len(states) >= 2 * len(jobs) and all(s in (DeliveryState.delivered, DeliveryState.failed) for s in states)


def job_runs(node: NodeProcess, series_uid: str, last_ack: dt.datetime) -> list[JobRun]:
    """Each job of the series, measured from ``last_ack``; raises when a job or a delivery failed."""
    runs = []
    with node.database.session() as session:
        series = session.get(Series, series_uid)
        for job in session.scalars(select(Job).where(Job.series_uid == series_uid).order_by(Job.id)).all():
            stored = session.scalars(select(Delivery.delivered_at).join(ResultObject, ResultObject.id == Delivery.result_id)
                                     .where(ResultObject.job_id == job.id, ResultObject.kind.in_(["seg", "sr"]))).all()
            if job.state != JobState.succeeded or len(stored) < 2 or None in stored:
                raise RuntimeError(f"{job.pipeline}: {job.state.value} ({job.reason}); results stored: {stored}")
            timings = job.timings or {}
            written = session.scalar(select(ResultObject.created_at).where(ResultObject.job_id == job.id,
                                                                           ResultObject.kind == "sr"))
            stages = {"complete->queued": _seconds(series.completed_at, job.queued_at),
                      "queue wait": float(timings.get("queue_wait", _seconds(job.queued_at, job.started_at))),
                      "load": float(timings.get("load", 0.0)), "write": float(timings.get("write", 0.0)),
                      "written->stored": _seconds(written, max(stored))}
            runs.append(JobRun(job.pipeline, _seconds(last_ack, max(stored)), _seconds(last_ack, series.completed_at),
                               float(timings.get("infer", 0.0)), series.completed_by.value, stages))
    return runs


def one_run(node: NodeProcess, files: list[Path], folder: Path, sender: str, pipelines: list[str]) -> list[JobRun]:
    """Send a fresh copy of ``files`` in one association as ``sender``; its jobs, measured."""
    copies, series_uid = fresh_copy(files, folder)
    outcomes = send_objects(copies, node.settings.node.ae_title, "127.0.0.1", node.port, calling_ae_title=sender)
    last_ack = _utcnow()
    refused = [o for o in outcomes if not o.stored]
    if refused:
        raise RuntimeError(f"the node refused instances: {refused[0].describe()}")
    node.wait_for(lambda: _settled(node, series_uid, pipelines), timeout=600, interval=0.05)
    return job_runs(node, series_uid, last_ack)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(name: str, fast: list[list[JobRun]], quiet: list[list[JobRun]], pipelines: list[str]) -> bool:
    """Print the medians per pipeline for one input; True when every goal is met.

    The speed-up compares the time beyond the pipeline's own inference (what completion, queueing, loading,
    writing and delivery take), since no way of completing a series changes the inference itself.
    """
    ok = True
    print(f"{name}: {len(fast)} run(s) with the default configuration, {len(quiet)} with the quiet period "
          "(seconds from the last C-STORE response; medians)")
    print(f"  {'pipeline':10} {'rule':11} {'complete':>8} {'inference':>9} {'SEG+SR':>7} {'beyond inf.':>11} | "
          f"{'quiet: complete':>15} {'SEG+SR':>7} {'beyond inf.':>11} | {'speed-up':>8}")
    for pipeline in pipelines:
        runs = [job for run in fast for job in run if job.pipeline == pipeline]
        slow = [job for run in quiet for job in run if job.pipeline == pipeline]
        beyond, slow_beyond = _median([j.beyond_inference for j in runs]), _median([j.beyond_inference for j in slow])
        speed_up = slow_beyond / beyond if slow else float("nan")
        rules = "/".join(sorted({j.completed_by for j in runs}))
        print(f"  {pipeline:10} {rules:11} {_median([j.completion for j in runs]):8.2f} "
              f"{_median([j.inference for j in runs]):9.2f} {_median([j.end_to_end for j in runs]):7.2f} "
              f"{beyond:11.2f} | {_median([j.completion for j in slow]):15.2f} "
              f"{_median([j.end_to_end for j in slow]):7.2f} {slow_beyond:11.2f} | {speed_up:7.1f}x")
        print(f"    each run, SEG+SR stored: {', '.join(f'{j.end_to_end:.2f}' for j in runs)}")
        print("    beyond completion (medians): " + ", ".join(
            f"{stage} {_median([j.stages[stage] for j in runs]):.2f}" for stage in (runs[0].stages if runs else {})))
        met = beyond < GOAL_BEYOND_INFERENCE and (not slow or speed_up >= GOAL_SPEED_UP)
        print(f"    goal: < {GOAL_BEYOND_INFERENCE:g} s beyond inference"
              + (f", >= {GOAL_SPEED_UP:g}x faster than the quiet period" if slow else "") + f": "
              + ("met" if met else "NOT met"))
        ok = ok and met
    return ok


def start_node(workdir: Path, orthanc: Orthanc, concurrency: int, pipelines: list[str]) -> NodeProcess:
    """A node with the default completion settings; QUIET_SENDER's series wait for the quiet period."""
    node = NodeProcess(workdir, port=free_port(), start_timeout=90, extra={
        "node": {"completion": {"quiet_seconds": 60}},  # the default (the test helper lowers it otherwise)
        "queue": {"embedded_worker": True, "worker_concurrency": concurrency},
        "senders": [{"ae_title": QUIET_SENDER, "completion": {"mode": "quiet"}}],
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port}],
        "routes": [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": pipelines, "destinations": ["pacs"]}],
        "logging": {"level": "WARNING"},
    })
    return node.start()


def run(runs: int, quiet_runs: int, concurrency: int, pipelines: list[str], warm_up: bool = True) -> int:
    inputs = {"sample study (72 slices)": sorted(SAMPLE.glob("*.dcm")), "300-slice series": phantom_files()}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; pipelines {', '.join(pipelines)}, "
          f"{concurrency} worker process(es)")
    with tempfile.TemporaryDirectory(prefix="pacsnode-bench-e2e-") as tmp:
        work = Path(tmp)
        orthanc = Orthanc(work / "orthanc")
        orthanc.directory.mkdir(parents=True)
        orthanc.start()
        node = start_node(work / "node", orthanc, concurrency, pipelines)
        try:
            if warm_up:
                one_run(node, inputs["sample study (72 slices)"], work / "warm-up", FAST_SENDER, pipelines)
                print("warm-up: the sample series went through the pipelines (models loaded, code imported)")
            ok = True
            for name, files in inputs.items():
                fast = [one_run(node, files, work / f"{name}-{n}", FAST_SENDER, pipelines) for n in range(runs)]
                quiet = [one_run(node, files, work / f"{name}-quiet-{n}", QUIET_SENDER, pipelines)
                         for n in range(quiet_runs)]
                ok = report(name, fast, quiet, pipelines) and ok
            return 0 if ok else 1
        except RuntimeError as exc:
            print(f"failed: {exc}")
            print(node.log()[-3000:])
            return 1
        finally:
            node.stop()
            orthanc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per input with the default configuration")
    parser.add_argument("--quiet-runs", type=int, default=1, help="runs per input with the quiet period (60 s each)")
    parser.add_argument("--concurrency", type=int, default=2, help="embedded worker processes")
    parser.add_argument("--pipelines", nargs="+", default=PIPELINES, help="pipelines the CT route runs")
    parser.add_argument("--cold", action="store_true", help="skip the warm-up series (first-use costs included)")
    args = parser.parse_args(argv)
    return run(args.runs, args.quiet_runs, args.concurrency, args.pipelines, warm_up=not args.cold)


if __name__ == "__main__":
    sys.exit(main())
