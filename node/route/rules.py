"""Routing: which pipelines and destinations a complete series triggers, and why.

A route matches on DICOM keywords of the series as a whole, on the called and on the calling AE title. A
keyword's values for a series are the set of values its instances have: for series-level attributes
(``SERIES_LEVEL_KEYWORDS``: Modality, BodyPartExamined...) the first instance's, the same on every instance; for
any other keyword (ImageType, ContrastBolusAgent, SliceThickness...) every distinct value of every instance, each
value of a multi-valued element counted on its own. A condition holds when one of the series' values satisfies
it, so a rule matches a series when, for each of its conditions, some instance has a value that satisfies it (not
necessarily the same instance for every condition). The ``inputs`` of study routes are matched on each series'
first instance. Condition values:

* a scalar: equality (for a multi-valued element such as ImageType, equal to one of its values);
* a list: any of the listed values;
* a string starting with ``~``: a regular expression searched in the value;
* a mapping ``{min: .., max: ..}``: an inclusive numeric range (either bound may be left out).

A called AE title can own routes: when some route names the series' called AE title, only the routes naming
it apply (sending to ``AI_LUNG`` runs the lung pipelines, nothing else); otherwise the routes that name no
called AE title apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from node.config import ConfigError, RouteConfig, Settings


IDENTIFYING_KEYWORDS = {"AccessionNumber", "ReferringPhysicianName", "InstitutionName", "StudyID", "OperatorsName"}
"""Keywords whose values never appear in a routing reason (reasons are logged and stored)."""


SERIES_LEVEL_KEYWORDS = frozenset({
    # Patient, General Study and Patient Study modules
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "PatientAge", "PatientSex", "PatientSize", "PatientWeight",
    # General Series module
    "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDate", "SeriesTime", "SeriesDescription",
    "BodyPartExamined", "ProtocolName", "Laterality", "PatientPosition", "OperatorsName",
    "PerformedProcedureStepDescription",
    # General Equipment module
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "StationName", "DeviceSerialNumber",
})
"""Keywords whose value is the same on every instance of a series: routing reads them from its first instance."""


class RouteError(ConfigError):
    """The routes in the configuration are invalid; the message names each bad rule."""


@dataclass(frozen=True)
class RouteVerdict:
    """One route's outcome for one series: matched or not, with the reasons."""

    route: RouteConfig
    matched: bool
    reasons: list[str]


@dataclass
class RoutingDecision:
    """What a series triggers: per pipeline, the routes asking for it and their destinations."""

    verdicts: list[RouteVerdict]
    pipelines: dict[str, list[str]] = field(default_factory=dict)  # pipeline -> route names
    destinations: dict[str, list[str]] = field(default_factory=dict)  # pipeline -> destination names

    @property
    def matched(self) -> list[RouteVerdict]:
        return [v for v in self.verdicts if v.matched]

    def unrouted_reason(self) -> str:
        """Why no route matched, in one line."""
        if not self.verdicts:
            return "no route applies (no routes configured for this called AE title)"
        parts = [f"{v.route.name}: {'; '.join(v.reasons)}" for v in self.verdicts]
        return "no route matched: " + " | ".join(parts)


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _values(element_value: Any) -> list[Any]:
    if isinstance(element_value, (MultiValue, list, tuple)):
        return list(element_value)
    return [element_value]


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equal(expected: Any, actual: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        number = _number(actual)
        return number is not None and number == float(expected)
    return str(actual).strip() == str(expected).strip()


def _is_identifying(keyword: str) -> bool:
    return keyword.startswith(("Patient", "OtherPatient")) or keyword in IDENTIFYING_KEYWORDS


def _match_condition(keyword: str, expected: Any, element_value: Any) -> str | None:
    """None when ``element_value`` satisfies ``expected``, else the reason it does not (no patient data in it)."""
    values = _values(element_value)
    shown = "\\".join(str(v) for v in values)
    if isinstance(expected, dict):
        low, high = expected.get("min"), expected.get("max")
        for value in values:
            number = _number(value)
            if number is not None and (low is None or number >= low) and (high is None or number <= high):
                return None
        return f"{keyword}={_display(keyword, shown)} not in range [{low}, {high}]"
    if isinstance(expected, str) and expected.startswith("~"):
        pattern = re.compile(expected[1:])
        if any(pattern.search(str(v)) for v in values) or pattern.search(shown):
            return None
        return f"{keyword}={_display(keyword, shown)} does not match /{expected[1:]}/"
    options = expected if isinstance(expected, list) else [expected]
    if any(_equal(option, value) for option in options for value in values):
        return None
    if _is_identifying(keyword):
        return f"{keyword} (value withheld) does not match"
    return f"{keyword}={shown!r} is not {options[0]!r}" if len(options) == 1 else f"{keyword}={shown!r} not in {options}"


def _display(keyword: str, shown: str) -> str:
    return "(value withheld)" if _is_identifying(keyword) else repr(shown)


def condition_reasons(conditions: dict[str, Any], header: Dataset) -> list[str]:
    """Why ``header`` fails each condition (keyword -> value, list, '~regex' or {min, max}); empty when it meets all."""
    reasons = []
    for keyword, expected in conditions.items():
        if keyword not in header or header[keyword].value in (None, ""):
            reasons.append(f"{keyword} is absent")
            continue
        reason = _match_condition(keyword, expected, header[keyword].value)
        if reason:
            reasons.append(reason)
    return reasons


def evaluate_route(route: RouteConfig, header: Dataset, called_ae: str | None, calling_ae: str | None) -> RouteVerdict:
    """Check every condition of ``route`` against one series; collect all reasons it fails."""
    reasons: list[str] = []
    called = _as_list(route.called_ae_title)
    if called and (called_ae or "").strip() not in called:
        reasons.append(f"called AE title {called_ae!r} is not {called}")
    calling = _as_list(route.calling_ae_title)
    if calling and (calling_ae or "").strip() not in calling:
        reasons.append(f"calling AE title {calling_ae!r} is not {calling}")
    reasons.extend(condition_reasons(route.match, header))
    matched = not reasons
    if matched:
        reasons = [_describe(route)]
    return RouteVerdict(route=route, matched=matched, reasons=reasons)


def _describe(route: RouteConfig) -> str:
    parts = [f"{k}={v!r}" for k, v in route.match.items()]
    if route.called_ae_title:
        parts.append(f"called AE {route.called_ae_title!r}")
    if route.calling_ae_title:
        parts.append(f"calling AE {route.calling_ae_title!r}")
    return "matched " + (", ".join(parts) if parts else "every series (no conditions)")


def applicable_routes(routes: Sequence[RouteConfig], called_ae: str | None) -> list[RouteConfig]:
    """The routes that apply to a called AE title: its own routes if it has any, else the general ones."""
    called = (called_ae or "").strip()
    own = [r for r in routes if called and called in _as_list(r.called_ae_title)]
    if own:
        return own
    return [r for r in routes if not _as_list(r.called_ae_title)]


def route_series(
    routes: Sequence[RouteConfig], header: Dataset, called_ae: str | None, calling_ae: str | None
) -> RoutingDecision:
    """Decide what a series with this first-instance ``header`` and AE titles triggers."""
    series_routes = [r for r in applicable_routes(routes, called_ae) if not r.inputs]
    verdicts = [evaluate_route(r, header, called_ae, calling_ae) for r in series_routes]
    decision = RoutingDecision(verdicts=verdicts)
    for verdict in decision.matched:
        for pipeline in verdict.route.pipelines:
            decision.pipelines.setdefault(pipeline, []).append(verdict.route.name)
            targets = decision.destinations.setdefault(pipeline, [])
            targets.extend(d for d in verdict.route.destinations if d not in targets)
    return decision


def instance_level_keywords(routes: Sequence[RouteConfig]) -> set[str]:
    """Keywords the routes test that may differ from instance to instance of a series: routing reads their values
    from every instance (``add_series_values``)."""
    return {keyword for route in routes if not route.inputs for keyword in route.match} - SERIES_LEVEL_KEYWORDS


def add_series_values(header: Dataset, others: Iterable[Dataset], keywords: Iterable[str]) -> Dataset:
    """``header`` (a series' first instance) with each of ``keywords`` holding the distinct values that it and
    ``others`` (the series' other instances) have, in the order first seen; what routing matches the series on."""
    others = list(others)
    for keyword in keywords:
        values: dict[str, Any] = {}
        for ds in (header, *others):
            found = ds.get(keyword)
            if found not in (None, ""):
                for value in _values(found):
                    values.setdefault(str(value).strip(), value)
        if len(values) > 1 or (values and keyword not in header):
            combined = list(values.values())
            setattr(header, keyword, combined if len(combined) > 1 else combined[0])
    return header


def route_problems(settings: Settings, known_pipelines: Iterable[str]) -> list[str]:
    """Every problem in ``settings.routes``, each naming its rule; empty when the routes are valid."""
    pipelines = set(known_pipelines)
    destinations = {d.name for d in settings.destinations}
    problems: list[str] = []
    names = [r.name for r in settings.routes]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"routes[{name}]: the name is used by more than one route")
    for route in settings.routes:
        where = f"routes[{route.name}]"
        if not route.pipelines:
            problems.append(f"{where}: names no pipeline; add `pipelines: [NAME]`")
        for pipeline in route.pipelines:
            if pipeline not in pipelines:
                problems.append(f"{where}: unknown pipeline {pipeline!r} (known: {sorted(pipelines)})")
        for destination in route.destinations:
            if destination not in destinations:
                problems.append(f"{where}: unknown destination {destination!r} (known: {sorted(destinations)})")
        for keyword, expected in route.match.items():
            problems.extend(f"{where}: match.{keyword}: {p}" for p in _condition_problems(keyword, expected))
        for name, conditions in route.inputs.items():
            if not conditions:
                problems.append(f"{where}: inputs.{name}: has no conditions; say which series of the study it is")
            for keyword, expected in conditions.items():
                problems.extend(f"{where}: inputs.{name}.{keyword}: {p}" for p in _condition_problems(keyword, expected))
    return problems


def _condition_problems(keyword: str, expected: Any) -> list[str]:
    problems = []
    if tag_for_keyword(keyword) is None:
        problems.append("not a DICOM keyword (use keywords such as Modality, BodyPartExamined)")
    if isinstance(expected, dict):
        unknown = set(expected) - {"min", "max"}
        if unknown or not expected:
            problems.append(f"a range takes only min and max, got {sorted(map(str, expected))}")
        for bound in ("min", "max"):
            if bound in expected and _number(expected[bound]) is None:
                problems.append(f"{bound} must be a number, got {expected[bound]!r}")
    elif isinstance(expected, str) and expected.startswith("~"):
        try:
            re.compile(expected[1:])
        except re.error as exc:
            problems.append(f"bad regular expression {expected[1:]!r}: {exc}")
    elif isinstance(expected, list) and any(isinstance(v, (dict, list)) for v in expected):
        problems.append("a list holds plain values only")
    return problems


def check_routes(settings: Settings) -> None:
    """Validate the routes at start; raise RouteError listing every bad rule."""
    from pipelines.registry import names

    problems = route_problems(settings, names(settings.pipelines))
    if problems:
        raise RouteError("invalid routes in the configuration:\n  " + "\n  ".join(problems))
