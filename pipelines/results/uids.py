"""Deterministic UIDs for result objects, derived from the job key.

A re-run of the same job must produce the same Series and SOP Instance UIDs, so that a PACS replaces the
objects it already holds instead of storing a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid


def job_uid(job_key: str, *parts: str | int, prefix: str = PYDICOM_ROOT_UID) -> UID:
    """A UID that depends only on ``job_key`` and ``parts`` (a SHA-512 hash under ``prefix``)."""
    if not job_key:
        raise ValueError("job_key must be a non-empty string identifying the job")
    return generate_uid(prefix, entropy_srcs=[job_key, *(str(part) for part in parts)])


@dataclass(frozen=True)
class ResultUids:
    """The UIDs of one kind of result object ("seg" or "sr") of one job."""

    series_uid: UID
    sop_instance_uid: UID


def result_uids(job_key: str, kind: str) -> ResultUids:
    """Series and SOP Instance UIDs of the ``kind`` object written for ``job_key``."""
    return ResultUids(
        series_uid=job_uid(job_key, kind, "series"),
        sop_instance_uid=job_uid(job_key, kind, "instance"),
    )


def tracking_uid(job_key: str, segment_number: int) -> UID:
    """Tracking UID shared by a segment in the SEG and its measurement group in the SR."""
    return job_uid(job_key, "segment", segment_number, "tracking")


def device_uid(pipeline: str, version: str) -> UID:
    """UID of an algorithm (pipeline name and version) as the SR's device observer; the same for every job."""
    return generate_uid(PYDICOM_ROOT_UID, entropy_srcs=["pacsnode-device", pipeline, version])


def job_key(series_uid: str, pipeline: str) -> str:
    """The key of a pipeline's job on a series: stable across re-runs, so they give the same result UIDs."""
    return f"{series_uid}/{pipeline}"
