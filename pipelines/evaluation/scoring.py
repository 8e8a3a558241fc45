"""Scoring one series: a pipeline's segments against reference segments, its findings against reference values.

Segments are paired by Segmented Property Type code (value and scheme), and by label (case-insensitive) when
the type does not decide: a reference with no codes the viewer knows, or two references of the same type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipelines.evaluation.metrics import SegmentScore, segment_score
from pipelines.evaluation.reference import ReferenceSegment
from pipelines.types import Classification, Code, Volume


class Labelled(Protocol):
    """A segment with its label, Segmented Property Type and full-size mask: a pipeline's ``Segment``, or a
    ``ReferenceSegment`` read from a SEG (the node scores its stored SEG results that way)."""

    label: str
    type: Code

    @property
    def mask(self) -> np.ndarray: ...


@dataclass
class SeriesScore:
    """What one reference says of one pipeline result."""

    segments: dict[str, SegmentScore] = field(default_factory=dict)
    classifications: dict[str, dict[str, str]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.segments and not self.classifications


def _same_type(a: Code, b: Code) -> bool:
    return bool(a.value) and (a.value, a.scheme.upper()) == (b.value, b.scheme.upper())


def _same_label(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def match_segments(
    predicted: Sequence[Labelled], references: Sequence[ReferenceSegment]
) -> tuple[list[tuple[Labelled, ReferenceSegment]], list[str]]:
    """Pairs (pipeline segment, reference segment) and a note for each pipeline segment left without one."""
    free = list(references)
    pairs, notes = [], []
    for segment in predicted:
        typed = [r for r in free if _same_type(segment.type, r.type)]
        labelled = [r for r in (typed or free) if _same_label(segment.label, r.label)]
        if len(typed) == 1:
            chosen = typed[0]
        elif labelled:
            chosen = labelled[0]
        elif typed:
            notes.append(
                f"{segment.label}: {len(typed)} reference segments of type {segment.type.meaning!r} and none "
                f"labelled {segment.label!r}"
            )
            continue
        else:
            notes.append(f"{segment.label}: no reference segment of type {segment.type.meaning!r} or with that label")
            continue
        free.remove(chosen)
        pairs.append((segment, chosen))
    return pairs, notes


def score_segments(volume: Volume, predicted: Sequence[Labelled], references: Sequence[ReferenceSegment]) -> SeriesScore:
    """Dice, HD95 and volumes of each pipeline segment that has a reference segment."""
    spacing_kji = tuple(reversed(volume.spacing))
    pairs, notes = match_segments(predicted, references)
    score = SeriesScore(unmatched=notes)
    for segment, reference in pairs:
        score.segments[segment.label] = segment_score(segment.mask, reference.mask, spacing_kji)
    return score


def _names(code: Code) -> set[str]:
    return {code.value.casefold(), code.meaning.casefold()}


def score_classifications(
    predicted: Iterable[Classification], reference: dict[str, str], known: Iterable[Code] = ()
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``{concept meaning: {"predicted": value meaning, "reference": value meaning}}`` for every finding the
    reference names (by concept meaning or code value); a reference value given as a code value is shown by its
    meaning when the predicted value or ``known`` codes hold it. Also a note for each reference left unused."""
    lookup = {key.casefold(): value for key, value in reference.items()}
    meanings = {c.value.casefold(): c.meaning for c in known} | {c.meaning.casefold(): c.meaning for c in known}
    scored: dict[str, dict[str, str]] = {}
    used: set[str] = set()
    for finding in predicted:
        key = next((k for k in lookup if k in _names(finding.concept)), None)
        if key is None:
            continue
        used.add(key)
        given = lookup[key]
        if given.casefold() in _names(finding.value):
            given = finding.value.meaning
        else:
            given = meanings.get(given.casefold(), given)
        scored[finding.concept.meaning] = {"predicted": finding.value.meaning, "reference": given}
    notes = [f"{reference_key}: the pipeline reported no such finding" for reference_key in reference
             if reference_key.casefold() not in used]
    return scored, notes
