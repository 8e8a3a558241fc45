"""What routing reads of each series: its first stored instance's header, with the values of its other
instances for the keywords that may vary within a series (``node.route.rules``)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from sqlalchemy import func, select

from node.db import Database, Instance
from node.operate.redaction import error_text
from node.route.rules import add_series_values

log = logging.getLogger(__name__)


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


def series_headers(database: Database, series_uids: list[str],
                   keywords: Collection[str] = ()) -> dict[str, pydicom.Dataset | str]:
    """Each series' header for routing (or the reason it cannot be read): its first instance's, holding for each
    of ``keywords`` the values of every instance of the series. Only those elements of the other instances
    are read."""
    paths = first_paths(database, series_uids)
    headers = {uid: read_header(paths.get(uid)) for uid in series_uids}
    if not keywords:
        return headers
    with database.session() as session:
        rows = session.execute(
            select(Instance.series_uid, Instance.path).where(Instance.series_uid.in_(series_uids))
        ).all()
    by_series: dict[str, list[str]] = {}
    for series_uid, path in rows:
        if path != paths.get(series_uid):
            by_series.setdefault(series_uid, []).append(path)
    for uid, header in headers.items():
        if isinstance(header, str):
            continue
        others = [_read_values(path, keywords) for path in sorted(by_series.get(uid, []))]
        add_series_values(header, [ds for ds in others if ds is not None], keywords)
    return headers


def header_of_files(paths: list[Path], keywords: Collection[str]) -> pydicom.Dataset:
    """The routing header of a series held in ``paths`` (not indexed): the first file's, holding for each of
    ``keywords`` the values of every file."""
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    if keywords:
        others = [_read_values(str(path), keywords) for path in paths[1:]]
        add_series_values(header, [ds for ds in others if ds is not None], keywords)
    return header


def _read_values(path: str, keywords: Collection[str]) -> pydicom.Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
    except (InvalidDicomError, OSError, EOFError) as exc:
        log.warning("routing: %s is left out of its series' values: %s", path, error_text(exc))
        return None
