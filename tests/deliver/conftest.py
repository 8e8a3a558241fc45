"""Fixtures for delivery tests: nodes with a real delivery worker and outbox loop (peers: tests/support/fixtures.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest



class DeliveryNode:
    """A node's configuration, database and (optionally) delivery worker and outbox loop, as the tests drive it."""

    def __init__(self, root: Path, config: dict) -> None:
        import yaml

        from node.config import Settings
        from node.db import open_database

        self.root = root
        self.config_path = root / "pacsnode.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.settings = Settings(**config)
        self.settings.node.storage_dir.mkdir(parents=True, exist_ok=True)
        self.database = open_database(self.settings.node.resolved_database_url())
        self.worker: subprocess.Popen | None = None
        self._stop = None
        self._threads: list = []

    def add_job(self, files: dict[str, Path], destinations: list[str], routes: list[str] | None = None,
                calling: str = "MODALITY", calling_host: str = "127.0.0.1") -> int:
        """Index a job with result objects ``files`` (kind -> path); returns the job ID."""
        import pydicom

        from node.db import Job, JobState, ResultObject, Series, SeriesState, Study

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

    def deliveries(self) -> list:
        from sqlalchemy import select

        from node.db import Delivery

        with self.database.session() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.id)).all())

    def start_worker(self) -> None:
        """A real Celery worker on the delivery queue, as `pacsnode worker --queues delivery` runs it."""
        import sys

        log = open(self.root / "worker.log", "ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "node.queue", "--config", str(self.config_path), "--queues", "delivery",
             "--pool", "solo"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def kill_worker(self) -> None:
        """SIGKILL: a crash or power cut, no clean shutdown."""
        import signal

        if self.worker is not None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(timeout=10)
            self.worker = None

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_worker()
            self.worker = None

    def start_outbox_loop(self) -> None:
        import threading

        from node.operate.background import start_background

        self._stop = threading.Event()
        self._threads = start_background(self.settings, self.database, self._stop, only=["outbox"])

    def stop_outbox_loop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=10)
            self._stop = None

    def close(self) -> None:
        self.stop_outbox_loop()
        self.stop_worker()
        self.database.dispose()



def node_config(storage: Path, destinations: list[dict], **extra: object) -> dict:
    return {
        "node": {"storage_dir": str(storage), "ae_title": "PACSNODE"},
        "delivery": {"retry_initial_seconds": 0.5, "retry_max_seconds": 2, "give_up_after_seconds": 60,
                     "connect_timeout": 2, "dimse_timeout": 20, "sending_lease_seconds": 60,
                     "requeue_after_seconds": 5},
        "destinations": destinations,
        **extra,
    }


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator:
    nodes: list[DeliveryNode] = []

    def make(destinations: list[dict], **extra: object) -> DeliveryNode:
        root = tmp_path / f"node{len(nodes)}"
        root.mkdir()
        node = DeliveryNode(root, node_config(root / "var", destinations, **extra))
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()
