"""A node as the queue, delivery and quality tests (and the dispatch benchmark) drive it: its config file,
settings and database, series and jobs indexed directly, real `pacsnode worker` processes and the node's
background loops run in threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import redis
import yaml
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from node.config import Settings
from node.db import (
    Database,
    Delivery,
    Instance,
    Job,
    JobState,
    ResultObject,
    Series,
    SeriesState,
    Study,
    open_database,
    utcnow,
)
from node.operate.background import start_background
from tests.support.dicom_factory import ct_slice
from tests.support.pipelines import RUN_LOG_ENV, SLEEP_ENV
from tests.support.waiting import wait_for

REDIS_URL = "redis://127.0.0.1:6379/7"
TEST_PIPELINES = [
    "NoopPipeline", "RejectingPipeline", "UnsupportedPipeline", "SleepPipeline", "FlakyPipeline", "ThresholdPipeline",
    "SlowThresholdPipeline",
]
SQUARE = np.full((16, 16), 1024, dtype=np.int16)
"""Stored values of the queue tests' slices: 0 HU with a 400 HU square (what ThresholdPipeline segments)."""
SQUARE[4:12, 4:12] = 1424
QUEUE_HEADER = {
    "PatientName": "Test^Queue", "PatientID": "Q1", "PatientBirthDate": "", "PatientSex": "O", "AccessionNumber": "A1",
    "StudyTime": "120000", "StudyID": "1", "ReferringPhysicianName": "", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
}


def base_config(storage: Path, broker_url: str = "", key_prefix: str = "", **queue: Any) -> dict[str, Any]:
    """A node configuration with the test pipelines, short timeouts and one route per pipeline."""
    pipelines = [{"name": name.removesuffix("Pipeline").lower(), "factory": f"tests.support.pipelines:{name}"}
                 for name in TEST_PIPELINES]
    return {
        "node": {"storage_dir": str(storage)},
        "queue": {
            "broker_url": broker_url,
            "key_prefix": key_prefix,
            "reconcile_seconds": 0.5,
            "heartbeat_seconds": 0.3,
            "job_timeout_seconds": 2.5,
            "requeue_after_seconds": 1.0,
            "retry_initial_seconds": 0.2,
            "retry_max_seconds": 1.0,
            **queue,
        },
        "pipelines": pipelines,
        "routes": [{"name": "all-ct", "match": {"Modality": "CT"}, "pipelines": ["noop"]}],
    }


def delivery_config(storage: Path, destinations: list[dict], **extra: object) -> dict[str, Any]:
    """A node configuration with ``destinations`` and short delivery retries and timeouts."""
    return {
        "node": {"storage_dir": str(storage), "ae_title": "PACSNODE"},
        "delivery": {"retry_initial_seconds": 0.5, "retry_max_seconds": 2, "give_up_after_seconds": 60,
                     "connect_timeout": 2, "dimse_timeout": 20, "sending_lease_seconds": 60,
                     "requeue_after_seconds": 5},
        "destinations": destinations,
        **extra,
    }


def queue_slice(study_uid: str, series_uid: str, k: int, modality: str = "CT", **attributes: Any) -> Dataset:
    """One 16x16 axial slice of the queue tests (``SQUARE``) at z = 2.5 k mm; ``attributes`` override keywords."""
    return ct_slice(
        study_uid, series_uid, k, pixels=SQUARE, rescale_intercept=-1024, pixel_spacing=(1.0, 1.0),
        slice_thickness=2.5, frame_of_reference_uid=generate_uid(entropy_srcs=[series_uid]), RescaleType=None,
        **{**QUEUE_HEADER, "Modality": modality, **attributes},
    )


class Node:
    """A node's settings, config file, database, run log, workers and loops, as the tests drive it."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config_path = root / "pacsnode.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.settings = Settings(**config)
        self.settings.node.storage_dir.mkdir(parents=True, exist_ok=True)
        self.database: Database = open_database(self.settings.node.resolved_database_url())
        self.run_log = root / "runs.log"
        self.run_log.touch()
        self.workers: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._loops: list[threading.Thread] = []

    def runs(self, event: str = "done") -> list[str]:
        """Lines of the test pipelines' run log for ``event`` (start, done...)."""
        return [line for line in self.run_log.read_text().splitlines() if line.startswith(event + " ")]

    def add_series(self, slices: int = 3, modality: str = "CT", called: str = "PACSNODE", calling: str = "SCANNER",
                   complete: bool = True, **attributes: Any) -> str:
        """Write a small CT series under storage_dir and index it (as complete, by default); its UID."""
        study_uid, series_uid = generate_uid(), generate_uid()
        datasets = [queue_slice(study_uid, series_uid, k, modality, **attributes) for k in range(slices)]
        folder = self.settings.node.storage_dir / "instances" / series_uid
        folder.mkdir(parents=True)
        with self.database.session() as session:
            session.add(Study(study_uid=study_uid))
            session.flush()
            session.add(Series(series_uid=series_uid, study_uid=study_uid, modality=modality,
                               state=SeriesState.receiving, called_ae_title=called, calling_ae_title=calling,
                               instance_count=slices))
            session.flush()
            for k, ds in enumerate(datasets):
                session.add(self._stored(ds, folder / f"{k:04d}.dcm", called, calling))
        if complete:
            self.complete(series_uid)
        return series_uid

    def add_study(self, study: dict[str, list[Dataset]], called: str = "PACSNODE", calling: str = "SCANNER",
                  complete: bool = True) -> dict[str, str]:
        """Store and index a study's series (name -> datasets), as complete by default; series UIDs by name."""
        uids = {}
        with self.database.session() as session:
            study_uid = next(iter(study.values()))[0].StudyInstanceUID
            if session.get(Study, study_uid) is None:
                session.add(Study(study_uid=study_uid))
                session.flush()
            for name, datasets in study.items():
                series_uid = uids[name] = datasets[0].SeriesInstanceUID
                folder = self.settings.node.storage_dir / "instances" / series_uid
                folder.mkdir(parents=True)
                session.add(Series(series_uid=series_uid, study_uid=study_uid, modality=datasets[0].Modality,
                                   state=SeriesState.receiving, called_ae_title=called, calling_ae_title=calling,
                                   instance_count=len(datasets)))
                session.flush()
                for ds in datasets:
                    session.add(self._stored(ds, folder / f"{ds.SOPInstanceUID}.dcm", called, calling))
        if complete:
            self.complete(*uids.values())
        return uids

    @staticmethod
    def _stored(ds: Dataset, path: Path, called: str, calling: str) -> Instance:
        """Write ``ds`` at ``path``; its index row."""
        ds.save_as(path, enforce_file_format=True)
        return Instance(sop_instance_uid=ds.SOPInstanceUID, series_uid=ds.SeriesInstanceUID,
                        sop_class_uid=ds.SOPClassUID, transfer_syntax_uid=ExplicitVRLittleEndian, path=str(path),
                        size_bytes=path.stat().st_size, called_ae_title=called, calling_ae_title=calling)

    def add_job(self, files: dict[str, Path], destinations: list[str], routes: list[str] | None = None,
                calling: str = "MODALITY", calling_host: str = "127.0.0.1") -> int:
        """Index a succeeded job with result objects ``files`` (kind -> path), to deliver; returns the job ID."""
        first = pydicom.dcmread(next(iter(files.values())), stop_before_pixels=True)
        study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID) + ".1"
        with self.database.session() as session:
            if session.get(Study, study_uid) is None:
                session.add(Study(study_uid=study_uid))
                session.flush()
            session.add(Series(series_uid=series_uid, study_uid=study_uid, modality="CT", state=SeriesState.routed,
                               calling_ae_title=calling, calling_host=calling_host))
            session.flush()
            job = Job(series_uid=series_uid, pipeline="test", routes=routes or [], destinations=destinations,
                      state=JobState.succeeded)
            session.add(job)
            session.flush()
            for kind, path in files.items():
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                session.add(ResultObject(job_id=job.id, kind=kind, sop_class_uid=ds.SOPClassUID,
                                         sop_instance_uid=ds.SOPInstanceUID, series_uid=ds.SeriesInstanceUID,
                                         study_uid=study_uid, path=str(path), size_bytes=path.stat().st_size))
            return job.id

    def complete(self, *series_uids: str) -> None:
        """Mark series complete, as the assembler does after the quiet period."""
        with self.database.session() as session:
            for series_uid in series_uids:
                series = session.get(Series, series_uid)
                series.state, series.completed_at = SeriesState.complete, utcnow()

    def jobs(self, series_uid: str | None = None) -> list[Job]:
        with self.database.session() as session:
            query = select(Job).order_by(Job.id)
            if series_uid:
                query = query.where(Job.series_uid == series_uid)
            return list(session.scalars(query).all())

    def deliveries(self) -> list[Delivery]:
        with self.database.session() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.id)).all())

    def series(self, series_uid: str) -> Series:
        with self.database.session() as session:
            return session.get(Series, series_uid)

    def wait_job(self, series_uid: str, states: set[str], timeout: float = 30) -> Job:
        def done() -> Job | None:
            jobs = self.jobs(series_uid)
            return jobs[0] if jobs and jobs[0].state.value in states else None

        return wait_for(done, timeout, f"a job of series {series_uid} in {states}")

    def start_loops(self, *names: str) -> None:
        """The node's background loops (default: dispatcher and reconciler), as `pacsnode serve` runs them."""
        self._loops += start_background(self.settings, self.database, self._stop,
                                        only=list(names or ("dispatcher", "reconciler")))

    def stop_loops(self) -> None:
        """Stop every loop started so far; later ``start_loops`` calls start new ones."""
        self._stop.set()
        for thread in self._loops:
            thread.join(timeout=10)
        self._stop, self._loops = threading.Event(), []

    def start_worker(
        self, queues: str = "gpu", pool: str = "prefork", sleep: float = 3.0, concurrency: int = 1, ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        """A real `pacsnode worker` process; returns once it is ready for tasks (or at once, ``ready=False``:
        tasks sent meanwhile wait in the broker)."""
        log_path = self.root / f"worker-{len(self.workers)}.log"
        env = {**os.environ, RUN_LOG_ENV: str(self.run_log), SLEEP_ENV: str(sleep), **(env or {})}
        command = [sys.executable, "-m", "node.queue", "--config", str(self.config_path),
                   "--queues", queues, "--pool", pool, "--concurrency", str(concurrency)]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        self.workers.append(process)

        def started() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"worker exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            return "pacsnode worker " in log_path.read_text()

        if ready:
            wait_for(started, 30, f"worker ready ({log_path})", every=0.1)
        return process

    def kill_workers(self) -> None:
        """SIGKILL every worker and its pool: a crash or power cut, no clean shutdown."""
        for process in self.workers:
            if process.poll() is None:
                _signal(process, signal.SIGKILL)
            process.wait(timeout=10)
        self.workers = []

    def stop_workers(self, grace: float = 2) -> None:
        """SIGTERM every worker; SIGKILL those still running after ``grace`` seconds."""
        for process in self.workers:
            if process.poll() is None:
                _signal(process, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:  # the filesystem transport's shutdown takes seconds; not under test
                _signal(process, signal.SIGKILL)
                process.wait()
        self.workers = []

    def close(self) -> None:
        self.stop_loops()
        self.stop_workers()
        self.database.dispose()


def _signal(process: subprocess.Popen, signum: int) -> None:
    """Signal a worker and its pool children (its process group when it leads one)."""
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signum)
            return
    except ProcessLookupError:
        return
    process.send_signal(signum)


def delete_prefixed(prefix: str) -> int:
    """Delete every Redis key under ``prefix`` (the node's broker state): a flush of this node's broker."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    return client.delete(*keys) if keys else 0
