"""The whole path in `pacsnode serve` with its embedded broker and worker: C-STORE in, routed by called AE, job run."""

from __future__ import annotations

from pathlib import Path

import pydicom
from sqlalchemy import select

from node.db import Job, JobState, Series
from tests.support.node_harness import base_config
from tests.support import dcmtk
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess
from tests.support.pipelines import RUN_LOG_ENV, SLEEP_ENV

def storescu(port: int, files: list[Path], called: str) -> None:
    result = dcmtk.storescu(port, files, calling="CT_SCANNER", called=called)
    assert result.returncode == 0, result.stderr


def test_series_sent_to_a_called_ae_title_runs_that_titles_pipeline(tmp_path: Path) -> None:
    config = base_config(tmp_path / "storage")
    extra = {
        "queue": {**config["queue"], "embedded_worker": True},
        "pipelines": config["pipelines"],
        "routes": [
            {"name": "lung-ae", "called_ae_title": "AI_LUNG", "pipelines": ["sleep"]},
            {"name": "general", "match": {"Modality": "CT"}, "pipelines": ["noop"]},
        ],
    }
    run_log = tmp_path / "runs.log"
    files = write_series(tmp_path / "series", 4, rows=32, columns=32)
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID

    env = {RUN_LOG_ENV: str(run_log), SLEEP_ENV: "0.2"}
    with NodeProcess(tmp_path / "node", extra=extra, env=env) as node:
        storescu(node.port, files, called="AI_LUNG")

        def finished() -> list[Job] | None:
            with node.database.session() as session:
                jobs = session.scalars(select(Job).where(Job.series_uid == series_uid)).all()
            return jobs if jobs and all(j.state in (JobState.succeeded, JobState.failed) for j in jobs) else None

        jobs = node.wait_for(finished, timeout=60)
        with node.database.session() as session:
            series = session.get(Series, series_uid)

    assert series.called_ae_title == "AI_LUNG" and series.state_reason == "routes: lung-ae"
    assert [(j.pipeline, j.state, j.run_count) for j in jobs] == [("sleep", JobState.succeeded, 1)]
    assert len([line for line in run_log.read_text().splitlines() if line.startswith("done ")]) == 1
