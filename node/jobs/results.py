"""A job's files in the index: the stored instances it reads and the result objects it writes.

Result rows are keyed (job, kind), so a re-run replaces them instead of adding new ones.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from node.db import Instance, Job, ResultObject, get_or_add, utcnow

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


def replaced_results(session: Session, job_id: int, instances: int) -> str | None:
    """What a run of job ``job_id`` on ``instances`` instances replaces, in words for its report; None on a first
    run. A series that reopened and completed again, or a re-run on request, replaces the earlier results at
    the destinations (same UIDs): its report says so, and from how many instances each was made."""
    job = session.get(Job, job_id)
    if job is None or not job.run_count:
        return None
    written = session.scalar(select(func.max(ResultObject.created_at)).where(ResultObject.job_id == job_id))
    if written is None:
        return None
    made_from = f", from {job.source_instances} instances of the series" if job.source_instances else ""
    return (f"This report replaces the one of run {job.run_count} of {job.pipeline} ({written:%Y-%m-%d %H:%M:%S} "
            f"UTC{made_from}); this run read {instances} instances.")
