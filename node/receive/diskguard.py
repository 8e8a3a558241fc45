"""The disk guard: the node refuses new associations while free space in storage_dir is below a threshold."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from node.config import Settings

log = logging.getLogger(__name__)


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


def refuse_reason(settings: Settings) -> str | None:
    """Why a new association must be refused for lack of space, or None when there is room."""
    if settings.node.min_free_disk_mb <= 0:
        return None
    try:
        state = disk_state(settings)
    except OSError as exc:
        log.error("disk guard cannot read free space of %s: %s", settings.node.storage_dir, exc)
        return None
    return state.describe() if state.low else None
