"""Where received instances live: validated UIDs become paths; the bytes are written by ``pipelines.durable``.

Layout: ``<storage_dir>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``. Each instance is written to a
temporary file in its folder, fsynced and renamed into place (see ``pipelines.durable``), so a crash leaves
either the whole previous file, the whole new file, or nothing (never a partial ``.dcm``).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.durable import TMP_SUFFIX, StorageFull, fsync_directory, remove_partials, write_durably

__all__ = ["TMP_SUFFIX", "InvalidUID", "StorageFull", "fsync_directory", "instance_path", "remove_partials",
           "validate_uid", "write_durably"]

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64


class InvalidUID(ValueError):
    """A UID is missing or malformed; it is never used as a path."""


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
