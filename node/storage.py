"""Durable instance storage: validated UIDs become paths, bytes reach the disk before Success.

Layout: ``<storage_dir>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``. Each write goes to a temporary
file in the target directory, is fsynced, renamed into place and the directory fsynced, so a crash
leaves either the whole previous file, the whole new file, or nothing (never a partial ``.dcm``).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64
TMP_SUFFIX = ".partial"


class InvalidUID(ValueError):
    """A UID is missing or malformed; it is never used as a path."""


class StorageFull(OSError):
    """The disk (or quota) is full; nothing was left behind."""


def validate_uid(value: object, name: str) -> str:
    """Return ``value`` as a UID string, or raise :class:`InvalidUID` naming the attribute ``name``."""
    if value is None or value == "":
        raise InvalidUID(f"{name} is missing")
    text = str(value).rstrip("\x00 ")
    if len(text) > MAX_UID_LENGTH:
        raise InvalidUID(f"{name} is longer than {MAX_UID_LENGTH} characters")
    if not UID_PATTERN.match(text):
        raise InvalidUID(f"{name} {text[:80]!r} is not a valid UID (digits and dots, no leading zeros)")
    return text


def instance_path(storage_dir: Path, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
    """Where an instance lives; every UID is validated first."""
    return (
        Path(storage_dir)
        / validate_uid(study_uid, "StudyInstanceUID")
        / validate_uid(series_uid, "SeriesInstanceUID")
        / f"{validate_uid(sop_instance_uid, 'SOPInstanceUID')}.dcm"
    )


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_directory(directory: Path) -> None:
    """Create ``directory`` and make each newly created level durable in its parent."""
    if directory.is_dir():
        return
    missing = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            pass  # another receiving process created it meanwhile
        fsync_directory(path.parent)


def write_durably(path: Path, chunks: Iterable[bytes], *, sync_directory: bool = True) -> int:
    """Write ``chunks`` to ``path`` atomically and durably; return the size in bytes.

    Raises :class:`StorageFull` on ENOSPC/EDQUOT (after removing the temporary file) and ``OSError``
    for other I/O failures, also without leaving a partial file. With ``sync_directory`` False the
    rename is not yet durable: the caller fsyncs ``path.parent`` before relying on it.
    """
    directory = path.parent
    try:
        _ensure_directory(directory)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(exc.errno, f"no space left creating {directory}") from exc
        raise
    tmp = directory / f".{path.name}.{os.getpid()}.{id(chunks):x}{TMP_SUFFIX}"
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    size += written
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_directory:
            fsync_directory(directory)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(exc.errno, f"no space left writing {path.name} ({size} bytes written)") from exc
        raise
    return size


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_partials(storage_dir: Path) -> int:
    """Delete temporary files a crash left behind; return how many were removed."""
    removed = 0
    root = Path(storage_dir)
    if not root.is_dir():
        return 0
    for tmp in root.glob(f"*/*/.*{TMP_SUFFIX}"):
        _remove_quietly(tmp)
        removed += 1
    return removed
