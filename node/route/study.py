"""Study-level routes: which series of a study are a route's named inputs, and which inputs are missing.

A route with ``inputs`` runs its pipelines once per study on several series, e.g. a brain tumour model on the
T1, T1c, T2 and FLAIR series. A series can be an input when it meets the route's ``match`` and AE titles and
that input's own conditions; when several series of the study can be one input, the one with the highest
SeriesNumber (the latest acquisition) is taken. One series cannot be two inputs: the conditions must tell
the inputs apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from node.config import RouteConfig
from node.route.rules import applicable_routes, condition_reasons, evaluate_route


@dataclass(frozen=True)
class StudySeries:
    """One series of a study as routing sees it: its first instance's header and the AE titles it came with."""

    series_uid: str
    header: Dataset
    called_ae: str | None = None
    calling_ae: str | None = None

    @property
    def number(self) -> int:
        try:
            return int(getattr(self.header, "SeriesNumber", 0) or 0)
        except (TypeError, ValueError):
            return 0


@dataclass
class StudyDecision:
    """A study-level route's inputs in one study: the series found for each, and why the others are missing."""

    route: RouteConfig
    found: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def anchor(self) -> str:
        """The series the job is filed under: the reference input's, else the first input found."""
        return self.found.get(self.route.reference_input) or next(iter(self.found.values()))

    def job_inputs(self) -> dict[str, object]:
        """What a job records of its inputs (``Job.inputs``)."""
        return {"reference": self.route.reference_input, "series": dict(self.found)}

    def missing_reason(self) -> str:
        return "; ".join(f"input {name}: {why}" for name, why in self.missing.items())


def input_names(route: RouteConfig, series: StudySeries) -> list[str]:
    """The inputs of ``route`` this series could be."""
    if not evaluate_route(route, series.header, series.called_ae, series.calling_ae).matched:
        return []
    return [name for name, conditions in route.inputs.items() if not condition_reasons(conditions, series.header)]


def study_inputs(routes: Sequence[RouteConfig], series: StudySeries) -> list[str]:
    """``route (input)`` for every study-level route input this series could be."""
    return [f"{route.name} ({name})" for route in study_routes(routes, series.called_ae)
            for name in input_names(route, series)]


def study_routes(routes: Sequence[RouteConfig], called_ae: str | None) -> list[RouteConfig]:
    """The study-level routes that apply to series sent to ``called_ae``."""
    return [route for route in applicable_routes(routes, called_ae) if route.inputs]


def decide_study(route: RouteConfig, series: Sequence[StudySeries]) -> StudyDecision | None:
    """The route's inputs among the study's series; None when no series of the study is any of them."""
    candidates: dict[str, list[StudySeries]] = {name: [] for name in route.inputs}
    for item in series:
        for name in input_names(route, item):
            candidates[name].append(item)
    if not any(candidates.values()):
        return None
    decision = StudyDecision(route)
    taken: dict[str, str] = {}
    for name, matching in candidates.items():
        if not matching:
            conditions = ", ".join(f"{k}={v!r}" for k, v in route.inputs[name].items())
            decision.missing[name] = f"no series of the study meets {conditions}"
            continue
        chosen = max(matching, key=lambda item: (item.number, item.series_uid))
        if chosen.series_uid in taken:
            decision.missing[name] = (f"its series {chosen.series_uid} is also input {taken[chosen.series_uid]}; "
                                      "make the inputs' conditions tell them apart")
            continue
        taken[chosen.series_uid] = name
        decision.found[name] = chosen.series_uid
    return decision
