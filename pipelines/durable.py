"""Atomic, durable file writes: a temporary name, fsync, rename into place, fsync of the folder.

A crash leaves either the whole previous file, the whole new file, or nothing under the final name (never a
partial file). The receiver stores instances with it and the result writers their SEG, SR and fallback
images; it lives in ``pipelines`` because the node depends on the pipelines and never the other way round.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".partial"
WRITE_BUFFER = 1 << 20  # small writes (a result's elements) gather here; large ones (pixel data) go straight through
_FULL = (errno.ENOSPC, errno.EDQUOT)


class StorageFull(OSError):
    """The disk (or quota) is full; nothing was left behind."""


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_directory(directory: Path) -> None:
    """Create ``directory`` and make each newly created level durable in its parent."""
    if directory.is_dir():
        return
    missing = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                pass  # another process created it meanwhile
            fsync_directory(path.parent)
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull(exc.errno, f"no space left creating {directory}") from exc
        raise


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call, that :func:`remove_partials` recognises."""
    return path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}{TMP_SUFFIX}"


@contextmanager
def atomic_file(path: Path, *, sync_directory: bool = True) -> Iterator[BinaryIO]:
    """A buffered file to write ``path``'s content into; on a clean exit it is fsynced and renamed into place.

    With ``sync_directory`` False the rename is not yet durable: the caller fsyncs ``path.parent`` before
    relying on it (the receiver's group commit shares that fsync between instances). On any error the
    temporary file is removed; a full disk raises :class:`StorageFull`, other I/O failures ``OSError``.
    """
    path = Path(path)
    ensure_directory(path.parent)
    tmp = temporary_name(path)
    try:
        raw = io.FileIO(tmp, "w")
        try:
            handle = io.BufferedWriter(raw, WRITE_BUFFER)
            yield handle
            handle.flush()
            os.fsync(raw.fileno())
        finally:
            raw.close()
        os.replace(tmp, path)
        if sync_directory:
            fsync_directory(path.parent)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL and not isinstance(exc, StorageFull):
            raise StorageFull(exc.errno, f"no space left writing {path.name}") from exc
        raise


def write_durably(path: Path, chunks: Iterable[bytes | bytearray | memoryview], *, sync_directory: bool = True) -> int:
    """Write ``chunks`` to ``path`` with :func:`atomic_file`; the size in bytes."""
    size = 0
    with atomic_file(path, sync_directory=sync_directory) as handle:
        for chunk in chunks:
            size += handle.write(chunk)
    return size


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_partials(root: Path, pattern: str = f"*/*/.*{TMP_SUFFIX}") -> int:
    """Delete temporary files an interrupted write left in the folders two levels under ``root`` (instances in
    ``<study>/<series>/``, results in ``results/<job>/``); how many were removed."""
    removed = 0
    root = Path(root)
    if not root.is_dir():
        return 0
    for tmp in root.glob(pattern):
        _remove_quietly(tmp)
        removed += 1
    return removed
