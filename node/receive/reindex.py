"""Re-index stored instances the index does not know (run by `serve` at start).

A receiving process renames an instance's fsynced file into its series folder before it indexes it, and
answers Success only once the index row is durable. A crash between the two leaves a stored file the index
does not know (never acknowledged, so its sender sends it again; or an index from before that guarantee);
this scan indexes such files, so the files stay the durable record.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from sqlalchemy import select

from node.db import Database, Instance
from node.receive.instances import Received, record_instance
from node.receive.dataset import UnreadableDataset, read_identifiers
from node.receive.storage import UID_PATTERN, InvalidUID

log = logging.getLogger(__name__)


def _is_uid(name: str) -> bool:
    return bool(UID_PATTERN.match(name))


def stored_instance_files(storage_dir: Path) -> list[Path]:
    """Files laid out as ``<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`` under ``storage_dir``."""
    found = []
    root = Path(storage_dir)
    if not root.is_dir():
        return found
    for study in os.scandir(root):
        if not (study.is_dir() and _is_uid(study.name)):
            continue
        for series in os.scandir(study.path):
            if not (series.is_dir() and _is_uid(series.name)):
                continue
            for entry in os.scandir(series.path):
                if entry.name.endswith(".dcm") and _is_uid(entry.name[:-4]):
                    found.append(Path(entry.path))
    return found


def reindex(storage_dir: Path, database: Database) -> int:
    """Index every stored instance file missing from the index; return how many were added."""
    files = stored_instance_files(storage_dir)
    if not files:
        return 0
    with database.session() as session:
        known = set(session.scalars(select(Instance.path)).all())
    added = 0
    for path in files:
        if str(path) in known:
            continue
        try:
            received = _read_stored(path)
        except (OSError, UnreadableDataset, InvalidUID, ValueError) as exc:
            log.warning("cannot re-index %s: %s", path, exc)
            continue
        with database.session() as session:
            added += int(record_instance(session, received))
    if added:
        log.info("re-indexed %d stored instance(s) the index had lost", added)
    return added


META_START = 132 + 12
"""Preamble and ``DICM``, then the File Meta Information Group Length element (explicit VR, 12 bytes)."""


def _read_stored(path: Path) -> Received:
    """The identifiers of a stored instance, read the way the receiver reads them: from the dataset after its
    File Meta Information, located by the group length every stored file carries."""
    meta = read_file_meta_info(path)
    length = meta.get("FileMetaInformationGroupLength")
    if length is None:
        raise UnreadableDataset("no File Meta Information Group Length: not a file pacsnode stored")
    with open(path, "rb") as fp:
        fp.seek(META_START + int(length))
        body = fp.read()
    syntax = str(meta.TransferSyntaxUID)
    ids = read_identifiers(body, syntax)
    source = str(meta.get("SourceApplicationEntityTitle", "") or "").strip() or None
    return Received(ids=ids, transfer_syntax_uid=syntax, path=str(path), size_bytes=path.stat().st_size,
                    calling_ae_title=source, called_ae_title=None, calling_host=None)
