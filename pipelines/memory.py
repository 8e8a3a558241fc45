"""The process's resident memory, and its peak over a block of code.

``/proc/self/statm`` is sampled every 2 ms from a thread: tracemalloc would miss torch's allocations and slow
highdicom's many small objects, and ``ru_maxrss`` only knows the peak of the whole process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
import types

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SAMPLE_SECONDS = 0.002


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc keeps it otherwise), so that the resident
    size measured next starts from what is really in use; nothing where the C library cannot."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def available() -> int:
    """Memory the system can still give processes without swapping (``MemAvailable``), in bytes."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable")


class PeakMemory:
    """``with PeakMemory() as peak: ...``; then ``peak.bytes`` is the highest resident size above the start."""

    def __init__(self) -> None:
        self.start = 0
        self.highest = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        release_freed_memory()
        self.start = self.highest = rss()
        self._done.clear()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.highest = max(self.highest, rss())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: types.TracebackType | None) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.highest = max(self.highest, rss())

    @property
    def bytes(self) -> int:
        """Peak resident size above the level at the start of the block."""
        return self.highest - self.start
