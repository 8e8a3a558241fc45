"""Fallback images built after the job, when a destination refuses its SEG and the job wrote none.

A job writes its fallback key slices with its SEG only when a destination is known to need them. The first
refusal of SEG by a destination is learnt at delivery, so the images are made then: the series is loaded again
from storage, the masks are read back from the job's SEG, and the images get the UIDs and file names the job
would have given them. They are registered as the job's result objects like the SEG and SR.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from node.config import Settings
from node.db import Database, Job, ResultObject, record_event
from node.jobs.results import record_results, series_paths
from node.operate.redaction import describe_error

log = logging.getLogger(__name__)


def write_late_fallback(settings: Settings, database: Database, job_id: int) -> int:
    """Write and register job ``job_id``'s fallback images from its stored series and SEG; how many.

    Returns 0, with the reason logged and recorded as an event, when the series or the SEG is no longer on
    disk or cannot be read.
    """
    from pydicom.errors import InvalidDicomError

    from pipelines.results import write_fallback
    from pipelines.results.fallback import result_from_seg
    from pipelines.results.uids import job_key
    from pipelines.types import UnsupportedSeries
    from pipelines.volume import load_series

    with database.session() as session:
        job = session.get(Job, job_id)
        seg_path = session.scalars(
            select(ResultObject.path).where(ResultObject.job_id == job_id, ResultObject.kind == "seg")
        ).first()
        if job is None or seg_path is None:
            return 0
        series_uid, pipeline = job.series_uid, job.pipeline
        paths = series_paths(session, series_uid)
    try:
        volume = load_series(list(paths))
        result = result_from_seg(Path(seg_path), volume)
        written = write_fallback(volume, result, settings.results, job_key(series_uid, pipeline), Path(seg_path).parent)
    except (OSError, InvalidDicomError, UnsupportedSeries, ValueError, KeyError, RuntimeError) as exc:
        message = (
            f"job {job_id}: cannot build the fallback images from series {series_uid} and its SEG "
            f"({describe_error(exc)}); re-run the job (`pacsnode rerun {job_id}`) if its series is still stored"
        )
        log.error(message)
        with database.session() as session:
            record_event(session, "seg_refused", message[:2000], uid=series_uid)
        return 0
    with database.session() as session:
        record_results(session, job_id, written)
    log.info("job %s: %d fallback image(s) built after a destination refused its SEG", job_id, len(written))
    return len(written)
