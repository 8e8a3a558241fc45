"""Test-only pipelines, loaded through the configuration (`pipelines: [{name: noop, factory: "tests.support.pipelines:NoopPipeline"}]`).

They do real work on the real volume (its shape and mean are read) but no model: no-op, permanently failing,
recording each run to a file (to count "exactly once"), sleeping (so a worker can be killed mid-job), failing
transiently a given number of times, and thresholding (one segment, so results are written).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset

from pipelines.types import Classification, Code, Measurement, PipelineResult, Segment, UnsupportedSeries, Volume

RUN_LOG_ENV = "PACSNODE_TEST_RUN_LOG"
"""File each recording pipeline appends `start`/`done` lines to (one per run)."""
SLEEP_ENV = "PACSNODE_TEST_SLEEP_SECONDS"
"""How long SleepPipeline sleeps (default 3 s)."""
GATE_ENV = "PACSNODE_TEST_GATE"
"""A file SlowThresholdPipeline waits for (at most 60 s) after its run, before it returns its result."""

ALGORITHM = Code("123110", "DCM", "Artificial Intelligence")


class _Base:
    version = "1.0"
    description = "test pipeline"

    def __init__(self, settings: object = None) -> None:
        self.name = getattr(settings, "name", type(self).__name__)

    def accepts(self, header: Dataset) -> str | None:
        return None

    def _empty(self) -> PipelineResult:
        return PipelineResult(pipeline=self.name, version=self.version, algorithm_family=ALGORITHM)


def _record(event: str, volume: Volume) -> None:
    path = os.environ.get(RUN_LOG_ENV)
    if path:
        series = volume.datasets[0].SeriesInstanceUID
        with open(path, "a") as handle:
            # survives kill -9 (page cache); the last field is the CPU threads the process gives models
            handle.write(f"{event} {series} {os.getpid()} {time.time():.4f} {torch.get_num_threads()}\n")


class NoopPipeline(_Base):
    """Returns an empty result: nothing to write."""

    def run(self, volume: Volume) -> PipelineResult:
        _record("start", volume)
        _record("done", volume)
        return self._empty()


class RejectingPipeline(_Base):
    """Declines every series (a permanent failure with a reason)."""

    def accepts(self, header: Dataset) -> str | None:
        return f"modality {header.get('Modality', '?')} is not MR"

    def run(self, volume: Volume) -> PipelineResult:
        raise AssertionError("a rejecting pipeline must never run")


class UnsupportedPipeline(_Base):
    """Raises UnsupportedSeries from run (permanent)."""

    def run(self, volume: Volume) -> PipelineResult:
        _record("start", volume)
        raise UnsupportedSeries(f"needs at least 100 slices, got {volume.array.shape[0]}")


class SleepPipeline(_Base):
    """Records its start, sleeps, records its end: kill the worker in between."""

    def run(self, volume: Volume) -> PipelineResult:
        _record("start", volume)
        time.sleep(float(os.environ.get(SLEEP_ENV, "3")))
        _record("done", volume)
        return self._empty()


class FlakyPipeline(_Base):
    """Fails with a transient error until the run log holds two `start` lines for the series."""

    def run(self, volume: Volume) -> PipelineResult:
        _record("start", volume)
        log = Path(os.environ[RUN_LOG_ENV]).read_text().split()
        if log.count("start") < 3:
            raise ConnectionError("model server unreachable (test)")
        _record("done", volume)
        return self._empty()


class ThresholdPipeline(_Base):
    """One segment: voxels above 0 HU, so a SEG is written."""

    def run(self, volume: Volume) -> PipelineResult:
        _record("start", volume)
        result = self._dense(volume)
        _record("done", volume)
        return result

    def _dense(self, volume: Volume) -> PipelineResult:
        result = self._empty()
        result.segments.append(
            Segment(
                number=1,
                label="dense",
                category=Code("91723000", "SCT", "Anatomical Structure"),
                type=Code("123037004", "SCT", "Body structure"),
                mask=np.asarray(volume.array > 0),
            )
        )
        return result


class SlowThresholdPipeline(ThresholdPipeline):
    """ThresholdPipeline that sleeps first (kill the worker mid-run) and, when $PACSNODE_TEST_GATE names a file,
    waits for it after recording its end (break something between the run and the job's end)."""

    def run(self, volume: Volume) -> PipelineResult:
        _record("start", volume)
        time.sleep(float(os.environ.get(SLEEP_ENV, "3")))
        result = self._dense(volume)
        _record("done", volume)
        gate = os.environ.get(GATE_ENV)
        deadline = time.monotonic() + 60
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return result


class DensityPipeline(_Base):
    """Measures the volume's mean HU and the volume above 200 HU, and grades it dense or not (a finding)."""

    def run(self, volume: Volume) -> PipelineResult:
        result = self._empty()
        mean = float(volume.array.mean())
        dense_ml = float(np.count_nonzero(volume.array > 200)) * volume.voxel_volume_ml
        result.measurements += [
            Measurement(Code("112181", "DCM", "Mean Attenuation Coefficient"), mean, Code("[hnsf'U]", "UCUM", "Hounsfield unit")),
            Measurement(Code("118565006", "SCT", "Volume"), dense_ml, Code("mL", "UCUM", "milliliter")),
        ]
        grade = Code("DENSE", "99TEST", "Dense") if mean > 150 else Code("LIGHT", "99TEST", "Light")
        result.classifications.append(Classification(Code("DENSITY", "99TEST", "Density"), grade))
        return result
