"""What a running node's receiving processes cost, read from /proc: threads and resident memory."""

from __future__ import annotations

from pathlib import Path

SPAWN_MARK = b"multiprocessing.spawn"  # receiving processes are started with multiprocessing's spawn


def children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def receiving_processes(serve_pid: int) -> list[int]:
    """The receiving processes `pacsnode serve` (``serve_pid``) started."""
    pids = []
    for pid in children(serve_pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if SPAWN_MARK in command and b"resource_tracker" not in command:
            pids.append(pid)
    return pids


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
