"""The conformance statement is generated from the code and lists what the node really accepts and writes."""

from __future__ import annotations

from pathlib import Path

from node.dicom import contexts
from node.conformance import render
from pipelines.results import RESULT_SOP_CLASSES

STATEMENT = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def test_checked_in_statement_is_the_generated_one() -> None:
    assert STATEMENT.read_text() == render(), "regenerate: python -m node.conformance > docs/conformance.md"


def test_statement_lists_every_sop_class_transfer_syntax_and_template() -> None:
    text = STATEMENT.read_text()
    for context in contexts.supported_contexts():
        assert f"`{context.abstract_syntax}`" in text
    for uid in contexts.TRANSFER_SYNTAXES:
        assert f"`{uid}`" in text
    for uids in RESULT_SOP_CLASSES.values():
        assert all(f"`{uid}`" in text for uid in uids)
    for template in ("[TID 1500]", "[TID 1411]", "[TID 1410]", "[TID 1501]", "[TID 2010]"):
        assert template in text
    for graphic in ('SCOORD "Image Region" (DCM 111030): POLYLINE', 'SCOORD "Image Region" (DCM 111030): POINT',
                    'SCOORD3D "Image Region" (DCM 111030): POINT',
                    'SCOORD "Image Region" (DCM 111030): ELLIPSE', '"Algorithm Parameters" (DCM 111002)'):
        assert graphic in text
