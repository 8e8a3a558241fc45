"""Resource admission: a job starts only when the memory (and GPU memory) its pipeline needs is there.

Each pipeline states its peak memory (``memory_mb``, ``gpu_memory_mb`` of its ``pipelines:`` entry, measured by
``pacsnode bundle check``, or a built-in pipeline's own figure). While a job runs, its need is reserved in a
ledger every worker process of the host shares (a small JSON file under ``storage_dir/run``, locked while it
is read and written; reservations of dead processes are dropped). A job starts when its need fits in what
the host allows jobs (``queue.job_memory_mb``) beside the reservations of the jobs already running and in the
memory the system has available now, and its GPU need in its device's free memory beside other reservations
on it. A job that does not fit now waits and is tried again; one that could never fit fails, saying why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import Settings

log = logging.getLogger(__name__)

HOST_RESERVE_MB = 1024
"""With ``queue.job_memory_mb: 0``, jobs may use the host's total memory less this."""


class ResourcesBusy(Exception):
    """The job does not fit in what is free now; it waits and is tried again. The message says what it waits for."""


class NeverFits(Exception):
    """The job needs more than this worker host could ever give it; the message says how much and where to change."""


@dataclass(frozen=True)
class Need:
    """What one job of a pipeline needs at its peak."""

    memory_mb: int | None = None
    gpu_memory_mb: int | None = None
    device: str = "cpu"


def pipeline_need(settings: Settings, name: str, pipeline: object) -> Need:
    """The pipeline's need: its configuration entry's figures, else the pipeline's own (built-in pipelines)."""
    entry = next((item for item in settings.pipelines if item.name == name), None)
    memory = entry.memory_mb if entry is not None and entry.memory_mb else getattr(pipeline, "memory_mb", None)
    gpu = entry.gpu_memory_mb if entry is not None and entry.gpu_memory_mb else getattr(pipeline, "gpu_memory_mb", None)
    return Need(memory, gpu, str(getattr(pipeline, "device", "cpu")))


def _meminfo() -> dict[str, int]:
    values = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) // 1024
    return values


def host_budget_mb(settings: Settings) -> int:
    """Memory (MB) the jobs of this host may take together."""
    return settings.queue.job_memory_mb or max(0, _meminfo()["MemTotal"] - HOST_RESERVE_MB)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """The memory the running jobs of this host have reserved."""

    def __init__(self, settings: Settings) -> None:
        folder = Path(settings.node.storage_dir) / "run"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"reservations-{socket.gethostname()}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, Any]]]:
        """The live reservations, under the host-wide lock; changes to the list are written back."""
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = json.loads(self.path.read_text()) if self.path.is_file() else []
            except ValueError:
                entries = []
            entries[:] = [entry for entry in entries if _alive(int(entry.get("pid", 0)))]
            yield entries
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(entries))
            os.replace(temporary, self.path)

    @contextlib.contextmanager
    def reserve(self, job_id: int, need: Need, budget_mb: int, available_mb: int,
                gpu: tuple[int, int] | None = None) -> Iterator[None]:
        """Hold ``need`` for the block; raise ResourcesBusy or NeverFits when it does not fit.

        ``available_mb`` is the memory the system has available now; ``gpu`` the (free, total) MB of the job's
        device when it runs on one.
        """
        entry = {"pid": os.getpid(), "job": job_id, "memory_mb": need.memory_mb or 0, "device": need.device,
                 "gpu_memory_mb": need.gpu_memory_mb or 0}
        with self._locked() as entries:
            _check_memory(job_id, need, budget_mb, available_mb, entries)
            if gpu is not None and need.gpu_memory_mb:
                _check_gpu(need, gpu, entries)
            entries.append(entry)
        try:
            yield
        finally:
            with self._locked() as entries:
                entries[:] = [e for e in entries if not (e["pid"] == entry["pid"] and e["job"] == job_id)]


def _check_memory(job_id: int, need: Need, budget_mb: int, available_mb: int, entries: list[dict[str, Any]]) -> None:
    wanted = need.memory_mb or 0
    if wanted > budget_mb:
        raise NeverFits(f"needs {wanted} MB of memory (its pipeline's memory_mb); jobs on this worker host may use "
                        f"{budget_mb} MB (queue.job_memory_mb): run it on a larger host or lower its needs")
    reserved = sum(entry["memory_mb"] for entry in entries)
    if reserved + wanted > budget_mb:
        holders = ", ".join(str(entry["job"]) for entry in entries)
        raise ResourcesBusy(f"waiting for memory: needs {wanted} MB; running jobs {holders} hold {reserved} of the "
                            f"{budget_mb} MB jobs may use on this host")
    if wanted > available_mb:
        raise ResourcesBusy(f"waiting for memory: needs {wanted} MB; the host has {available_mb} MB available now")
    log.info("job %s: %d MB reserved (%d of %d MB held by running jobs)", job_id, wanted, reserved, budget_mb)


def _check_gpu(need: Need, gpu: tuple[int, int], entries: list[dict[str, Any]]) -> None:
    free, total = gpu
    wanted = need.gpu_memory_mb or 0
    if wanted > total:
        raise NeverFits(f"needs {wanted} MB of GPU memory (gpu_memory_mb); {need.device} has {total} MB")
    reserved = sum(entry["gpu_memory_mb"] for entry in entries if entry["device"] == need.device)
    if wanted > free or reserved + wanted > total:
        raise ResourcesBusy(f"waiting for GPU memory: needs {wanted} MB on {need.device}; {free} MB free, "
                            f"{reserved} MB held by running jobs")


@contextlib.contextmanager
def admitted(settings: Settings, job_id: int, need: Need) -> Iterator[None]:
    """Run the block with the job's need reserved on this host (nothing to reserve: no check)."""
    if not need.memory_mb and not need.gpu_memory_mb:
        yield
        return
    gpu = None
    if need.gpu_memory_mb and need.device.startswith("cuda"):
        from pipelines.device import gpu_memory_mb

        gpu = gpu_memory_mb(need.device)
    with Ledger(settings).reserve(job_id, need, host_budget_mb(settings), _meminfo()["MemAvailable"], gpu):
        yield
