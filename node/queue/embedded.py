"""The embedded worker's ties to `pacsnode serve`: it dies with serve, says when it is ready, and holds a lock.

`serve` starts each embedded worker (the job worker, the delivery worker) with one end of a socket pair, whose
descriptor it names in ``$PACSNODE_SUPERVISOR_FD``. In the worker that socket carries the readiness message to
serve, and its end-of-file tells the worker that serve is gone, however it died (a portable watchdog). On Linux
the worker and each of its pool processes also ask for a parent-death signal, which the kernel sends even when
a process is too busy to notice. An exclusive lock file under the storage folder, held for the worker's life,
keeps a second worker set (another `serve` on the same folder, or an orphan of an earlier one) from starting.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from celery.signals import worker_process_init, worker_ready

log = logging.getLogger(__name__)

SUPERVISOR_FD_ENV = "PACSNODE_SUPERVISOR_FD"
REFUSED_EXIT_CODE = 75  # EX_TEMPFAIL: another worker set holds the lock; serve tries again later
READY_MESSAGE = b"ready"
PR_SET_PDEATHSIG = 1


class WorkerSetRunning(RuntimeError):
    """Another embedded worker for the same queues already runs on this storage folder."""


def lock_path(storage_dir: Path, queues: str) -> Path:
    """The lock file of the embedded worker for ``queues`` (e.g. ``gpu``) under ``storage_dir``."""
    return Path(storage_dir) / f".embedded-worker-{queues.replace(',', '-')}.lock"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 32).decode(errors="replace").strip() or "?"


def hold_lock(path: Path) -> int:
    """Take the lock at ``path`` for this process's life (its descriptor is returned; keep it open).

    A lock file left by a dead process does not block: the kernel releases the lock when its holder ends.
    Raises ``WorkerSetRunning`` naming the holder's pid when a live process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = _holder(fd)
        os.close(fd)
        raise WorkerSetRunning(
            f"another pacsnode worker set (pid {holder}) already works on this storage folder (lock {path}): "
            "stop the other `pacsnode serve` using it, or give this node its own node.storage_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(path: Path) -> str | None:
    """The pid of the live process holding the lock at ``path``, or None when it is free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)  # closing releases a lock this probe took
    return None


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``signum`` to this process when its parent ends (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum))


def _end_process_group(why: str) -> None:
    log.error("%s: ending this worker and its pool processes", why)
    logging.shutdown()
    if os.getpgrp() == os.getpid():  # serve starts the worker as a process group leader
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(channel: socket.socket) -> None:
    """End the worker when serve's end of ``channel`` closes: serve stopped or died."""
    try:
        while channel.recv(64):
            pass
    except OSError:
        pass
    _end_process_group("pacsnode serve is gone")


def _pool_process_init(main_pid: int) -> None:
    die_with_parent()
    if os.getppid() != main_pid:  # the worker died between the fork and the request
        os._exit(1)


def attach(storage_dir: Path, queues: str) -> int | None:
    """Tie this worker to the `serve` that started it, when it did (``$PACSNODE_SUPERVISOR_FD`` set).

    Ends the process with ``REFUSED_EXIT_CODE`` when another worker set holds the lock; returns the lock's
    descriptor, open (the lock held) until the process ends, or None when this worker was not started by serve.
    """
    fd_text = os.environ.pop(SUPERVISOR_FD_ENV, "")
    if not fd_text:
        return None
    die_with_parent()
    channel = socket.socket(fileno=int(fd_text))
    threading.Thread(target=_watch, args=(channel,), name="pacsnode-serve-watch", daemon=True).start()
    try:
        lock = hold_lock(lock_path(storage_dir, queues))
    except WorkerSetRunning as exc:
        log.error("%s", exc)
        logging.shutdown()
        os._exit(REFUSED_EXIT_CODE)
    main_pid = os.getpid()
    worker_process_init.connect(lambda **_: _pool_process_init(main_pid), weak=False)
    worker_ready.connect(lambda **_: channel.sendall(READY_MESSAGE), weak=False)
    return lock
