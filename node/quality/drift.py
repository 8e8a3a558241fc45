"""Drift without references: each pipeline version's recent runs compared with its first runs (the baseline).

Watched: every measurement (population stability index, flagged when it is large and a two-sample
Kolmogorov-Smirnov test finds the windows differ: PSI alone is biased upwards on small windows), every
finding's value frequencies (PSI over the values, with a chi-square test), the inputs (acquisition attribute values the baseline
never had: a new scanner, kernel, slice thickness or protocol) and the share of series the pipeline refuses.
The windows count runs, not days, so a quiet week and a busy one are judged alike.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sqlalchemy import delete, select

from node.config import QualityConfig, Settings
from node.db import Database, QualityDrift, QualityMeasurement, QualityRun, utcnow

log = logging.getLogger(__name__)

PSI_BINS = 10
PSI_FLOOR = 1e-4
"""Smallest share a bin is given, so a bin empty on one side adds a large but finite term."""


def population_stability_index(baseline: Sequence[float], recent: Sequence[float], bins: int = PSI_BINS) -> float:
    """PSI of ``recent`` against ``baseline`` over the baseline's quantile bins.

    Written here because neither SciPy nor scikit-learn has it: sum over bins of (r - b) * ln(r / b) with b, r
    the bins' shares. Under 0.1 is usually read as stable, above 0.25 as a major shift.
    """
    base, now = np.asarray(baseline, dtype=float), np.asarray(recent, dtype=float)
    inner = np.unique(np.quantile(base, np.linspace(0, 1, bins + 1)[1:-1]))
    if inner.size < 2:  # a (nearly) constant baseline: a bin for its values and one either side
        top = base.max()
        inner = np.array([base.min(), np.nextafter(top, np.inf) if top == base.min() else top])
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    return _psi(np.histogram(base, edges)[0], np.histogram(now, edges)[0])


def category_stability_index(baseline: Sequence[str], recent: Sequence[str]) -> float:
    """PSI over the values of a finding (its class frequencies)."""
    values = sorted(set(baseline) | set(recent))
    base, now = Counter(baseline), Counter(recent)
    return _psi(np.array([base[v] for v in values]), np.array([now[v] for v in values]))


def frequencies_differ(baseline: Sequence[str], recent: Sequence[str]) -> float:
    """p-value of a chi-square test that both windows share one distribution of values (1.0 for one value)."""
    values = sorted(set(baseline) | set(recent))
    if len(values) < 2:
        return 1.0
    base, now = Counter(baseline), Counter(recent)
    return float(stats.chi2_contingency(np.array([[base[v] for v in values], [now[v] for v in values]])).pvalue)


def _psi(base_counts: np.ndarray, recent_counts: np.ndarray) -> float:
    base = np.maximum(base_counts / max(base_counts.sum(), 1), PSI_FLOOR)
    now = np.maximum(recent_counts / max(recent_counts.sum(), 1), PSI_FLOOR)
    return float(np.sum((now - base) * np.log(now / base)))


@dataclass(frozen=True)
class Windows:
    """The job IDs of a pipeline version's baseline and recent runs."""

    baseline: list[int]
    recent: list[int]


def windows(job_ids: Sequence[int], config: QualityConfig) -> Windows | None:
    """Baseline: the first ``drift_baseline_runs``; recent: the last ``drift_recent_runs`` after them. None until
    each holds ``drift_min_runs``."""
    baseline = list(job_ids[: config.drift_baseline_runs])
    recent = list(job_ids[config.drift_baseline_runs:][-config.drift_recent_runs:])
    if len(baseline) < config.drift_min_runs or len(recent) < config.drift_min_runs:
        return None
    return Windows(baseline, recent)


def _drift(kind: str, name: str, **values: object) -> QualityDrift:
    return QualityDrift(kind=kind, name=name[:160], **values)


def measurement_drift(rows: Sequence[QualityMeasurement], window: Windows, config: QualityConfig) -> list[QualityDrift]:
    """One check per measurement and per finding reported in both windows."""
    in_base, in_recent = set(window.baseline), set(window.recent)
    numbers: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    findings: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in rows:
        side = 0 if row.job_id in in_base else 1 if row.job_id in in_recent else None
        if side is None:
            continue
        if row.category is not None:
            findings[row.name][side].append(row.category)
        elif row.value is not None:
            numbers[row.name][side].append(row.value)
    checks = []
    for name, (base, now) in sorted(numbers.items()):
        if len(base) < config.drift_min_runs or len(now) < config.drift_min_runs:
            continue
        psi = population_stability_index(base, now)
        p_value = float(stats.ks_2samp(base, now).pvalue)
        detail = f"median {np.median(base):.4g} in the baseline, {np.median(now):.4g} recently"
        flagged = psi > config.drift_psi_threshold and p_value < config.drift_p_value
        checks.append(_drift("measurement", name, statistic=psi, p_value=p_value, baseline_count=len(base),
                             recent_count=len(now), flagged=flagged, detail=detail))
    for name, (base, now) in sorted(findings.items()):
        if len(base) < config.drift_min_runs or len(now) < config.drift_min_runs:
            continue
        psi, p_value = category_stability_index(base, now), frequencies_differ(base, now)
        shares = ", ".join(f"{v} {c / len(now):.0%}" for v, c in Counter(now).most_common())
        checks.append(_drift("finding", name, statistic=psi, p_value=p_value, baseline_count=len(base),
                             recent_count=len(now), flagged=psi > config.drift_psi_threshold and p_value < config.drift_p_value,
                             detail=f"recently: {shares}"))
    return checks


def input_drift(runs: dict[int, QualityRun], window: Windows, config: QualityConfig) -> list[QualityDrift]:
    """Per watched attribute: values in recent runs that no baseline run had, and the refusal share's rise."""
    checks = []
    for keyword in config.input_attributes:
        seen = {runs[j].inputs.get(keyword) for j in window.baseline}
        new = Counter(runs[j].inputs.get(keyword) for j in window.recent if runs[j].inputs.get(keyword) not in seen)
        new.pop(None, None)
        share = sum(new.values()) / len(window.recent)
        detail = ", ".join(f"{value!r} ({count} series)" for value, count in new.most_common(5)) or "no new values"
        checks.append(_drift("input", keyword, statistic=share, baseline_count=len(window.baseline),
                             recent_count=len(window.recent), flagged=bool(new), detail=detail))
    before = sum(runs[j].refused for j in window.baseline) / len(window.baseline)
    after = sum(runs[j].refused for j in window.recent) / len(window.recent)
    checks.append(_drift("refusals", "refused series", statistic=after - before, baseline_count=len(window.baseline),
                         recent_count=len(window.recent), flagged=after - before >= config.drift_refusal_increase,
                         detail=f"{before:.0%} of series refused in the baseline, {after:.0%} recently"))
    return checks


def check(settings: Settings, database: Database) -> list[QualityDrift]:
    """Check every pipeline version with enough runs and store the outcome (replacing the previous check)."""
    config = settings.quality
    with database.session() as session:
        runs = session.scalars(select(QualityRun).order_by(QualityRun.recorded_at, QualityRun.job_id)).all()
        by_version: dict[tuple[str, str], list[QualityRun]] = defaultdict(list)
        for run in runs:
            by_version[(run.pipeline, run.pipeline_version)].append(run)
        checks: list[QualityDrift] = []
        for (pipeline, version), version_runs in sorted(by_version.items()):
            window = windows([run.job_id for run in version_runs], config)
            if window is None:
                continue
            rows = session.scalars(select(QualityMeasurement).where(
                QualityMeasurement.job_id.in_(window.baseline + window.recent))).all()
            found = measurement_drift(rows, window, config) + input_drift({r.job_id: r for r in version_runs}, window, config)
            for item in found:
                item.pipeline, item.pipeline_version, item.computed_at = pipeline, version, utcnow()
            checks += found
        session.execute(delete(QualityDrift))
        session.add_all(checks)
    flagged = [c for c in checks if c.flagged]
    for item in flagged:
        log.warning("drift: %s %s %s %r: %s", item.pipeline, item.pipeline_version, item.kind, item.name, item.detail)
    return checks


def tick(settings: Settings, database: Database) -> None:
    check(settings, database)
