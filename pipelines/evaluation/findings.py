"""Coded findings of a structured report (a reader's TID 1500 qualitative evaluations, for instance), read
with pydicom alone so the node's dispatcher can look at a received report without loading imaging libraries."""

from __future__ import annotations

from pydicom.dataset import Dataset

from pipelines.types import Code


class ReferenceError(ValueError):
    """A reference cannot be read, or does not fit the series; the message says why."""


def code_of(item: Dataset | None) -> Code:
    """The Code of a code sequence item (an empty Code for none)."""
    if item is None:
        return Code("", "", "")
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(getattr(item, "CodeMeaning", "")))


def _code_items(items: list[Dataset]) -> list[tuple[Code, Code]]:
    found = []
    for item in items:
        if getattr(item, "ValueType", "") == "CODE" and item.get("ConceptNameCodeSequence") and item.get("ConceptCodeSequence"):
            found.append((code_of(item.ConceptNameCodeSequence[0]), code_of(item.ConceptCodeSequence[0])))
        found += _code_items(list(item.get("ContentSequence", [])))
    return found


def read_reference_findings(report: Dataset) -> dict[str, str]:
    """``{concept meaning: value meaning}`` of every coded finding (CODE content item) of a structured report,
    such as a reader's TID 1500 qualitative evaluations; raises ReferenceError when it holds none."""
    found = {concept.meaning: value.meaning for concept, value in _code_items(list(report.get("ContentSequence", [])))
             if concept.meaning and value.meaning}
    if not found:
        raise ReferenceError("the structured report holds no coded finding")
    return found
