"""Read-only views of quality monitoring for `pacsnode quality`, the dashboard and /metrics: plain dicts."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db import Job, QualityDrift, QualityReference, QualityScore


def scores(session: Session, pipeline: str | None = None, since: dt.datetime | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Scores of references, newest first."""
    query = (
        select(QualityScore, Job.series_uid, QualityReference.calling_ae_title)
        .join(Job, Job.id == QualityScore.job_id)
        .join(QualityReference, QualityReference.id == QualityScore.reference_id)
        .order_by(QualityScore.scored_at.desc(), QualityScore.id)
        .limit(limit)
    )
    if pipeline:
        query = query.where(QualityScore.pipeline == pipeline)
    if since:
        query = query.where(QualityScore.scored_at >= since)
    return [
        {
            "scored_at": score.scored_at, "pipeline": score.pipeline, "version": score.pipeline_version,
            "job_id": score.job_id, "series_uid": series_uid, "kind": score.kind, "name": score.name,
            "dice": score.dice, "hd95_mm": score.hd95_mm, "volume_ml": score.volume_ml,
            "reference_volume_ml": score.reference_volume_ml, "predicted": score.predicted,
            "reference": score.reference_value, "sender": sender or "",
        }
        for score, series_uid, sender in session.execute(query).all()
    ]


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pipeline, version and segment (or finding): count, mean Dice, median HD95, agreement."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["pipeline"], row["version"], row["kind"], row["name"])].append(row)
    found = []
    for (pipeline, version, kind, name), members in sorted(groups.items()):
        dice = [m["dice"] for m in members if m["dice"] is not None]
        hd95 = [m["hd95_mm"] for m in members if m["hd95_mm"] is not None]
        agree = [m["predicted"] == m["reference"] for m in members if kind == "classification"]
        found.append({
            "pipeline": pipeline, "version": version, "kind": kind, "name": name, "count": len(members),
            "dice_mean": statistics.fmean(dice) if dice else None,
            "hd95_mm_median": statistics.median(hd95) if hd95 else None,
            "agreement": sum(agree) / len(agree) if agree else None,
        })
    return found


def references(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    """References received, newest first, with what became of them."""
    rows = session.scalars(select(QualityReference).order_by(QualityReference.received_at.desc()).limit(limit)).all()
    return [
        {"id": r.id, "series_uid": r.referenced_series_uid, "sender": r.calling_ae_title or "", "state": r.state,
         "reason": r.reason or "", "received_at": r.received_at, "scored_at": r.scored_at}
        for r in rows
    ]


def drift(session: Session, flagged_only: bool = False) -> list[dict[str, Any]]:
    """The latest drift checks, flagged ones first."""
    query = select(QualityDrift).order_by(QualityDrift.flagged.desc(), QualityDrift.pipeline, QualityDrift.kind, QualityDrift.name)
    if flagged_only:
        query = query.where(QualityDrift.flagged.is_(True))
    return [
        {"pipeline": d.pipeline, "version": d.pipeline_version, "kind": d.kind, "name": d.name,
         "statistic": d.statistic, "p_value": d.p_value, "baseline": d.baseline_count, "recent": d.recent_count,
         "flagged": d.flagged, "detail": d.detail or "", "computed_at": d.computed_at}
        for d in session.scalars(query).all()
    ]
