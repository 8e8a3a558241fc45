"""Offline evaluation: run a pipeline on each case of a set, score it against the case's reference, and
summarise over the cases.

Each case is independent: one whose series, pipeline run or reference fails is reported with the reason and
the others go on. Each case's SEG and SR are written as the node would have sent them (same UIDs, same
options), so a reader can open them beside the reference in a viewer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import codes
from pipelines.evaluation.cases import Case, find_cases
from pipelines.evaluation.reference import ReferenceError, read_reference_classifications, read_reference_seg
from pipelines.evaluation.scoring import SeriesScore, score_classifications, score_segments
from pipelines.evaluation.summary import summarise
from pipelines.registry import Pipeline
from pipelines.results import write_results
from pipelines.results.uids import job_key
from pipelines.settings import ResultOptions
from pipelines.types import Code, PipelineResult, UnsupportedSeries, Volume
from pipelines.volume import load_series

logger = logging.getLogger(__name__)

KNOWN_CODES = [value for value in vars(codes).values() if isinstance(value, Code)]
"""Codes whose meanings name reference values given as code values."""


class CaseFailed(Exception):
    """The case cannot be scored; the message is the reason shown in the report."""


@dataclass
class CaseOutcome:
    name: str
    score: SeriesScore | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"case": self.name, "status": "failed" if self.reason else "ok", "reason": self.reason}
        score = self.score or SeriesScore()
        entry["segments"] = {label: s.as_dict() for label, s in score.segments.items()}
        entry["classifications"] = score.classifications
        entry["notes"] = self.notes
        entry["outputs"] = self.outputs
        return entry


def _load(case: Case, pipeline: Pipeline) -> Volume:
    if not case.images:
        raise CaseFailed("no image files in the case folder" + (f" ({'; '.join(case.unreadable)})" if case.unreadable else ""))
    if not case.reference_segs and case.reference_json is None:
        raise CaseFailed("no reference: put a DICOM SEG and/or reference.json beside the series")
    try:
        volume = load_series(case.images)
    except UnsupportedSeries as exc:
        raise CaseFailed(f"the series cannot be loaded: {exc}") from exc
    refusal = pipeline.accepts(volume.datasets[0])
    if refusal:
        raise CaseFailed(f"{pipeline.name} does not accept the series: {refusal}")
    return volume


def score_against_references(volume: Volume, result: PipelineResult, case: Case) -> tuple[SeriesScore, list[str]]:
    """The case's score and notes; raises CaseFailed when its reference cannot be read or matches nothing."""
    references = []
    for path in case.reference_segs:
        try:
            references.extend(read_reference_seg(path, volume))
        except ReferenceError as exc:
            raise CaseFailed(f"reference {path.name}: {exc}") from exc
    score = score_segments(volume, result.segments, references) if references else SeriesScore()
    notes = list(score.unmatched) if references else []
    if case.reference_json is not None:
        try:
            expected = read_reference_classifications(case.reference_json)
        except ReferenceError as exc:
            raise CaseFailed(str(exc)) from exc
        score.classifications, unused = score_classifications(result.classifications, expected, KNOWN_CODES)
        notes += unused
    if score.empty:
        raise CaseFailed("the reference matches none of the pipeline's segments or findings: " + "; ".join(notes))
    return score, notes


def evaluate_case(pipeline: Pipeline, case: Case, out_dir: Path | None, options: ResultOptions) -> CaseOutcome:
    """Run, write and score one case; failures become the outcome's reason."""
    outcome = CaseOutcome(case.name)
    try:
        volume = _load(case, pipeline)
        result = pipeline.run(volume)
        if out_dir is not None:
            key = job_key(str(volume.datasets[0].SeriesInstanceUID), pipeline.name)
            written = write_results(volume, result, options, key, out_dir / "cases" / case.name, fallback=False)
            outcome.outputs = [str(item.path.relative_to(out_dir)) for item in written]
        outcome.score, outcome.notes = score_against_references(volume, result, case)
    except CaseFailed as exc:
        outcome.reason = str(exc)
    except (UnsupportedSeries, ValueError) as exc:
        outcome.reason = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - one case's failure must not stop the set; the report names it
        logger.exception("case %s: failed", case.name)
        outcome.reason = f"{type(exc).__name__}: {exc}"
    if outcome.reason:
        logger.warning("case %s: %s", case.name, outcome.reason)
    return outcome


def evaluate(
    pipeline: Pipeline,
    cases_dir: Path,
    out_dir: Path | None = None,
    options: ResultOptions | None = None,
    progress: Callable[[CaseOutcome], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``pipeline`` on every case folder of ``cases_dir``; the report as report.json holds it."""
    options = options or ResultOptions()
    outcomes = []
    for case in find_cases(cases_dir):
        outcome = evaluate_case(pipeline, case, out_dir, options)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    cases = [outcome.as_dict() for outcome in outcomes]
    return {
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.version,
        "cases": cases,
        "summary": summarise(cases),
    }
