"""Drift without references: runs of the real processing path record what a pipeline measured, and a set of
series whose measurements shift (and that come from a scanner the baseline never saw) raises drift flags; with
the default windows, a stable set raises none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node.config import Settings
from node.db import Job, QualityMeasurement, QualityRun, Series, SeriesState, Study, open_database, utcnow
from node.jobs.runner import Outcome, process_job
from node.quality import drift
from node.jobs.dispatch import route_complete
from node.web.metrics import make_registry
from tests.support.node_harness import Node

pytestmark = pytest.mark.timeout(120)
PACSNODE = Path(sys.executable).with_name("pacsnode")
RUNS = 6


@pytest.fixture
def node(tmp_path: Path) -> Node:
    config = {
        "node": {"storage_dir": str(tmp_path / "storage")},
        "pipelines": [{"name": "density", "factory": "tests.support.pipelines:DensityPipeline"},
                      {"name": "rejecting", "factory": "tests.support.pipelines:RejectingPipeline"}],
        "routes": [{"name": "all-ct", "match": {"Modality": "CT"}, "pipelines": ["density", "rejecting"]}],
        "quality": {"drift_baseline_runs": RUNS, "drift_recent_runs": RUNS, "drift_min_runs": 5},
    }
    running = Node(tmp_path, config)
    yield running
    running.database.dispose()


def _process(node: Node, **attributes: object) -> None:
    """Store a series, route it and run its jobs as a worker does."""
    series_uid = node.add_series(slices=3, **attributes)
    for job_id in route_complete(node.settings, node.database, [series_uid]):
        assert process_job(node.settings, node.database, job_id) in (Outcome.succeeded, Outcome.failed)


def _metric_samples(settings: Settings, database) -> dict:  # type: ignore[no-untyped-def]
    text = generate_latest(make_registry(settings, database)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def _quality_page(settings: Settings, database) -> str:  # type: ignore[no-untyped-def]
    """The dashboard's Quality page as the node's web app serves it."""
    from fastapi.testclient import TestClient

    from node.web.app import create_app

    served = settings.model_copy(update={"web": settings.web.model_copy(update={"enabled": True, "token": "drift"})})
    with TestClient(create_app(served, database)) as client:
        response = client.get("/quality", headers={"Authorization": "Bearer drift"})
    assert response.status_code == 200
    return response.text


def test_a_series_set_whose_measurements_shift_raises_drift_flags(node: Node) -> None:
    offsets = [-6, -3, -1, 0, 2, 5]  # scanner calibration wobbles by a few HU
    for offset in offsets:
        _process(node, RescaleIntercept=-1024 + offset, ManufacturerModelName="CT-A")
    for offset in offsets:  # a new scanner whose images read 100 HU denser
        _process(node, RescaleIntercept=-924 + offset, ManufacturerModelName="CT-B")
    with node.database.session() as session:
        runs = session.query(QualityRun).filter_by(pipeline="density").count()
        refused = session.query(QualityRun).filter_by(pipeline="rejecting", refused=True).count()
        means = [m.value for m in session.query(QualityMeasurement).filter_by(name="Mean Attenuation Coefficient")]
    assert runs == 2 * RUNS and refused == 2 * RUNS
    assert sorted(means)[:RUNS] == pytest.approx([100 + o for o in offsets])

    checks = {(c.pipeline, c.kind, c.name): c for c in drift.check(node.settings, node.database)}
    mean = checks[("density", "measurement", "Mean Attenuation Coefficient")]
    assert mean.flagged and mean.statistic > node.settings.quality.drift_psi_threshold and mean.p_value < 0.01
    assert mean.detail == "median 99.5 in the baseline, 199.5 recently"  # the medians of 100 + offsets, 200 + offsets
    assert not checks[("density", "measurement", "Volume")].flagged  # the dense region itself did not change
    assert checks[("density", "finding", "Density")].flagged  # every recent series is graded dense
    model = checks[("density", "input", "ManufacturerModelName")]
    assert model.flagged and "'CT-B' (6 series)" in model.detail
    assert not checks[("density", "input", "Manufacturer")].flagged
    # The rejecting pipeline refused every series from the start: a high share, but no rise.
    assert not checks[("rejecting", "refusals", "refused series")].flagged

    page = _quality_page(node.settings, node.database)
    flagged_rows = [row for row in page.split('<tr class="drift-row"')[1:] if row.startswith(' data-flagged="yes"')]
    assert any("Mean Attenuation Coefficient" in row and "DRIFT" in row for row in flagged_rows)
    assert any("ManufacturerModelName" in row and "&#39;CT-B&#39; (6 series)" in row for row in flagged_rows)
    samples = _metric_samples(node.settings, node.database)
    labels = (("kind", "measurement"), ("name", "Mean Attenuation Coefficient"), ("pipeline", "density"), ("version", "1.0"))
    assert samples[("pacsnode_quality_drift", labels)] == 1
    shown = subprocess.run([str(PACSNODE), "quality", "--config", str(node.config_path)], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "COLUMNS": "240"})
    assert shown.returncode == 0, shown.stderr
    flagged = [line for line in shown.stdout.splitlines() if "DRIFT" in line]
    assert any("Mean Attenuation" in line for line in flagged) and any("ManufacturerModelName" in line for line in flagged)


def _runs(database, pipeline: str, values: list[float], refused: list[bool], models: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Record runs as the processing path does, one job per value, in order."""
    with database.session() as session:
        session.add(Study(study_uid="1.2.3"))
        session.flush()
        for index, (value, refuse, model) in enumerate(zip(values, refused, models, strict=True)):
            uid = f"1.2.3.{pipeline}.{index}"
            session.add(Series(series_uid=uid, study_uid="1.2.3", state=SeriesState.routed))
            session.flush()
            job = Job(series_uid=uid, pipeline=pipeline)
            session.add(job)
            session.flush()
            at = utcnow()
            session.add(QualityRun(job_id=job.id, pipeline=pipeline, pipeline_version="2.0", series_uid=uid,
                                   refused=refuse, inputs={"ManufacturerModelName": model}, recorded_at=at))
            if not refuse:
                session.add(QualityMeasurement(job_id=job.id, pipeline=pipeline, pipeline_version="2.0",
                                               name="Right lung: Volume", value=value, unit="mL", recorded_at=at))


@pytest.mark.parametrize("shift, flagged", [(1.0, False), (1.25, True)])
def test_default_windows_flag_a_volume_shift_and_not_sampling_noise(tmp_path: Path, shift: float, flagged: bool) -> None:
    settings = Settings(node={"storage_dir": tmp_path})
    database = open_database(settings.node.resolved_database_url())
    defaults = settings.quality
    rng = np.random.default_rng(7)
    baseline = rng.lognormal(np.log(2400), 0.2, defaults.drift_baseline_runs)
    recent = rng.lognormal(np.log(2400 * shift), 0.2, defaults.drift_recent_runs)
    count = defaults.drift_baseline_runs + defaults.drift_recent_runs
    _runs(database, "ct-lungs", [*baseline, *recent], [False] * count, ["CT-A"] * count)
    checks = {(c.kind, c.name): c for c in drift.check(settings, database)}
    volume = checks[("measurement", "Right lung: Volume")]
    assert (volume.baseline_count, volume.recent_count) == (defaults.drift_baseline_runs, defaults.drift_recent_runs)
    assert volume.flagged is flagged
    assert not checks[("input", "ManufacturerModelName")].flagged
    database.dispose()


def test_a_rising_refusal_share_is_flagged(tmp_path: Path) -> None:
    settings = Settings(node={"storage_dir": tmp_path})
    database = open_database(settings.node.resolved_database_url())
    base, recent = settings.quality.drift_baseline_runs, settings.quality.drift_recent_runs
    refused = [i % 20 == 0 for i in range(base)] + [i % 3 == 0 for i in range(recent)]  # 5 % then 34 %
    _runs(database, "ct-lungs", [2400.0] * (base + recent), refused, ["CT-A"] * (base + recent))
    checks = {(c.kind, c.name): c for c in drift.check(settings, database)}
    refusals = checks[("refusals", "refused series")]
    assert refusals.flagged and refusals.statistic == pytest.approx(17 / 50 - 5 / 100)
    database.dispose()


def test_too_few_runs_are_not_judged(tmp_path: Path) -> None:
    settings = Settings(node={"storage_dir": tmp_path})
    database = open_database(settings.node.resolved_database_url())
    count = settings.quality.drift_baseline_runs + settings.quality.drift_min_runs - 1
    _runs(database, "ct-lungs", [2400.0] * count, [False] * count, ["CT-A"] * count)
    assert drift.check(settings, database) == []
    database.dispose()
