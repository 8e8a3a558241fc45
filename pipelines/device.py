"""Where inference runs: CUDA with automatic mixed precision when present, the CPU otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)


def release_cached_memory(device: torch.device) -> None:
    """Give the GPU memory torch keeps cached after a job back to the device, so that other worker processes
    sharing the GPU see it free (their admission checks read the free memory)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gpu_memory_mb(device: str | torch.device) -> tuple[int, int]:
    """(free, total) MB of a CUDA device's memory, as the driver reports them (other processes included)."""
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return free // 2**20, total // 2**20


def select_device(preferred: str | None = None) -> torch.device:
    """``preferred`` ("cuda", "cuda:1", "cpu") when given, else CUDA when available, else the CPU."""
    if preferred:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {preferred!r} was asked for but CUDA is not available; use 'cpu' or leave it unset")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def share_cpu_threads(processes: int, threads: int = 0) -> int:
    """Give this process's models ``threads`` CPU threads, or (0) its share of the cores when ``processes``
    worker processes run side by side; returns the number set.

    Without this every process starts one thread per core, and two concurrent jobs on a small host spend their
    time preempting each other (loading and writing slow down as much as inference does).
    """
    count = threads or max(1, (os.cpu_count() or 1) // max(1, processes))
    torch.set_num_threads(count)
    return count


@contextlib.contextmanager
def inference_mode(device: torch.device, amp: bool = True) -> Iterator[None]:
    """No autograd, and float16 autocast on CUDA when ``amp`` (CPU runs stay float32)."""
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        yield
