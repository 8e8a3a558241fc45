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


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children(todo.pop())
        found.extend(below)
        todo.extend(below)
    return found


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def command_line(pid: int) -> list[str]:
    """The arguments ``pid`` was started with (empty when it is gone)."""
    try:
        return [part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]
    except OSError:
        return []


def processes_mentioning(text: str) -> list[int]:
    """Running processes with ``text`` among their arguments (e.g. a node's configuration file)."""
    return [int(entry.name) for entry in Path("/proc").glob("[0-9]*")
            if any(text in part for part in command_line(int(entry.name))) and running(int(entry.name))]
