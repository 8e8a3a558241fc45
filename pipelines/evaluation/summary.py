"""Over the cases of an evaluation: mean Dice with its bootstrap confidence interval and median HD95 per
segment, and classification metrics per finding. Only cases that were scored count."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pipelines.evaluation.metrics import classification_summary, mean_with_ci, median


def summarise_segments(cases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        if case["status"] == "ok":
            for label, score in case["segments"].items():
                by_label[label].append(score)
    summary = {}
    for label, scores in sorted(by_label.items()):
        dice_mean, dice_ci = mean_with_ci([s["dice"] for s in scores])
        summary[label] = {
            "dice_mean": dice_mean,
            "dice_ci95": dice_ci,
            "hd95_mm_median": median([s["hd95_mm"] for s in scores]),
            "cases": len(scores),
        }
    return summary


def summarise_classifications(cases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for case in cases:
        if case["status"] == "ok":
            for concept, values in case["classifications"].items():
                pairs[concept][0].append(values["predicted"])
                pairs[concept][1].append(values["reference"])
    return {concept: classification_summary(predicted, reference) for concept, (predicted, reference) in sorted(pairs.items())}


def summarise(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's ``summary``: segments, classifications and how many cases were scored or failed."""
    return {
        "segments": summarise_segments(cases),
        "classifications": summarise_classifications(cases),
        "cases_scored": sum(case["status"] == "ok" for case in cases),
        "cases_failed": sum(case["status"] != "ok" for case in cases),
    }
