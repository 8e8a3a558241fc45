"""The first stored instance of each series, read for routing (headers only)."""

from __future__ import annotations

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import func, select

from node.db import Database, Instance
from node.operate.redaction import error_text


def read_header(path: str | None) -> pydicom.Dataset | str:
    """A series' first instance header, or the reason it cannot be read."""
    if path is None:
        return "the series has no stored instances"
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as exc:
        return f"its first instance cannot be read: {error_text(exc)}"


def first_paths(database: Database, series_uids: list[str]) -> dict[str, str]:
    """Each series' first stored file (by path), by series UID."""
    with database.session() as session:
        rows = session.execute(
            select(Instance.series_uid, func.min(Instance.path))
            .where(Instance.series_uid.in_(series_uids))
            .group_by(Instance.series_uid)
        ).all()
    return {uid: path for uid, path in rows}
