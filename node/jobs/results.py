"""A job's files in the index: the stored instances it reads and the result objects it writes.

Result rows are keyed (job, kind), so a re-run replaces them instead of adding new ones.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from node.db import Instance, ResultObject, get_or_add, utcnow

_SERIES_PATHS = select(Instance.path).where(Instance.series_uid == bindparam("series_uid")).order_by(Instance.path)


def series_paths(session: Session | Connection, series_uid: str) -> tuple[Path, ...]:
    """The stored files of a series, in path order."""
    return tuple(Path(p) for p in session.scalars(_SERIES_PATHS, {"series_uid": series_uid}).all())


def record_results(session: Session, job_id: int, written: list) -> None:
    """Upsert job ``job_id``'s ResultObject rows, keyed (job, kind), for the written result files."""
    for item in written:
        row = get_or_add(session, ResultObject, job_id=job_id, kind=item.kind)
        row.sop_class_uid, row.sop_instance_uid = item.sop_class_uid, item.sop_instance_uid
        row.series_uid, row.study_uid = item.series_uid, item.study_uid
        row.path, row.size_bytes, row.created_at = str(item.path), item.size_bytes, utcnow()
