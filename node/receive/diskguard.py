"""The disk guard: free space in storage_dir, checked before each association, each instance and each job.

Below ``node.min_free_disk_mb`` instances are refused (new associations, and every C-STORE of those in
progress); below half of it jobs wait before they write results. The last half stays for what must never
run out: the index (SQLite in storage_dir by default) and the embedded broker's messages. Everything is
checked again each time, so the node carries on by itself once space is freed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from node.config import Settings

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True)
class DiskState:
    path: Path
    free_bytes: int
    total_bytes: int
    threshold_bytes: int

    @property
    def low(self) -> bool:
        """True while new associations must be refused."""
        return self.threshold_bytes > 0 and self.free_bytes < self.threshold_bytes

    def describe(self) -> str:
        free_mb = self.free_bytes // (1024 * 1024)
        limit_mb = self.threshold_bytes // (1024 * 1024)
        if self.low:
            return (
                f"disk guard active: {free_mb} MB free in {self.path}, below node.min_free_disk_mb={limit_mb}; "
                "free space or lower the threshold"
            )
        return f"{free_mb} MB free in {self.path}"


def _existing(path: Path) -> Path:
    """The nearest existing directory at or above ``path`` (storage_dir may not exist yet)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_state(settings: Settings) -> DiskState:
    """Free space of the file system holding ``node.storage_dir``."""
    path = _existing(Path(settings.node.storage_dir))
    usage = shutil.disk_usage(path)
    return DiskState(
        path=path,
        free_bytes=usage.free,
        total_bytes=usage.total,
        threshold_bytes=settings.node.min_free_disk_mb * 1024 * 1024,
    )


def refuse_reason(settings: Settings, incoming_bytes: int = 0) -> str | None:
    """Why a new association (or an instance of ``incoming_bytes``) must be refused for lack of space, or None."""
    return _shortage(settings, settings.node.min_free_disk_mb * MB, incoming_bytes)


def results_refusal(settings: Settings) -> str | None:
    """Why a job must wait before writing results (free space below half the guard's threshold), or None."""
    reason = _shortage(settings, settings.node.min_free_disk_mb * MB // 2, 0)
    return None if reason is None else f"{reason}; results wait below half of it"


def _shortage(settings: Settings, threshold_bytes: int, incoming_bytes: int) -> str | None:
    if threshold_bytes <= 0:
        return None
    try:
        state = disk_state(settings)
    except OSError as exc:
        log.error("disk guard cannot read free space of %s: %s", settings.node.storage_dir, exc)
        return None
    if state.free_bytes - incoming_bytes >= threshold_bytes:
        return None
    return state.describe() if state.low else DiskState(state.path, state.free_bytes - incoming_bytes,
                                                         state.total_bytes, state.threshold_bytes).describe()
