"""Result objects copy only valid patient and study values: every copied attribute fuzzed with invalid values of
its VR is repaired where the standard allows, else left empty or out, with a note that never holds the value;
the SEG, SR and fallback images are then written and pass dciodvfy."""

from __future__ import annotations

import logging
import struct

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import validate_value

from pipelines.results import write_results
from pipelines.results.header import COPIED_KEYWORDS, TYPE_2, check_value, clean_header, with_valid_headers
from tests.support.results import dciodvfy_errors, make_result

INVALID: dict[str, list[object]] = {
    "DA": ["00000000", "19010230", "19010203x", "2024-13-01", "yesterday", "1901 02 03", "2024-01-01", "2024.01.01"],
    "TM": ["25", "1261", "noon", "12:00:00", "120000.1234567"],
    "DT": ["2024023012", "20240101250000", "now"],
    "AS": ["forty", "045X", "45Y", "7 D"],
    "PN": ["A" * 70, "a^b^c^d^e^f", "Zyx\x01name", "Single"],
    "LO": ["x" * 65, "bad\x01char", "two\\values"],
    "SH": ["x" * 17, "tab\there"],
    "CS": ["male", "NOT-A-CODE", "X" * 17],
    "DS": ["abc", "1" * 17, "1,5"],
    "IS": ["1.5", "x"],
    "UT": ["bell\x07"],
    "LT": ["nul\x00byte"],
    "ST": ["esc ok \x1b but not \x02"],
    "UC": ["bad\x01char"],
    "UI": ["1.2.03", "not a uid"],
    "US": [-1, 70000],
    "FD": ["not a number"],
}
"""Invalid (or repairable) values of each VR the copied modules use."""

SAMPLE_ITEM_VALUES = {"PatientID": "x" * 65, "IssuerOfPatientID": "bad\x01char", "TypeOfPatientID": "text"}


def _raw(keyword: str, value: object) -> Dataset:
    """A dataset holding ``value`` for ``keyword`` as a file would bring it (bytes, not checked by pydicom)."""
    ds = Dataset()
    vr = dictionary_VR(keyword)
    if vr == "SQ":
        item = Dataset()
        for key, text in SAMPLE_ITEM_VALUES.items():
            _set_raw(item, key, text)
        ds.add_new(tag_for_keyword(keyword), "SQ", [item])  # items as a reader would leave them: raw
    else:
        _set_raw(ds, keyword, value)
    return ds


def _set_raw(ds: Dataset, keyword: str, value: object) -> None:
    """Set the bytes a file would hold: text as Latin-1, numbers packed (a wrong length where invalid)."""
    tag, vr = tag_for_keyword(keyword), dictionary_VR(keyword)
    if vr == "US":
        raw = struct.pack("<H", value) if 0 <= int(value) < 65536 else b"\x01\x02\x03"  # type: ignore[call-overload]
    elif vr == "FD":
        raw = b"\x00" * 5 if isinstance(value, str) else struct.pack("<d", value)
    else:
        raw = str(value).encode("latin-1")
        raw += b" " if len(raw) % 2 else b""
    ds[tag] = RawDataElement(BaseTag(tag), vr, len(raw), raw, 0, False, True)


def _valid(keyword: str, ds: Dataset) -> bool:
    if keyword not in ds:
        return True
    element = ds[keyword]
    if element.VR == "SQ":
        return all(_valid(key, item) for item in element.value for key in SAMPLE_ITEM_VALUES)
    values = element.value if element.VM > 1 else [element.value]
    if dictionary_VM(element.tag) == "1" and element.VM > 1:
        return False
    try:
        for value in values:
            validate_value(element.VR, str(value) if element.VR not in ("US", "FD", "DS", "IS") else value, config.RAISE)
    except ValueError:
        return False
    return True


def _cases() -> list[tuple[str, object]]:
    cases = []
    for keyword in COPIED_KEYWORDS:
        vr = dictionary_VR(keyword)
        if keyword == "StudyInstanceUID":
            continue  # the receiver refuses an instance without a valid one
        cases.extend((keyword, value) for value in (INVALID.get(vr) or [None]))
    return cases


def test_the_copied_attributes_are_those_highdicom_copies() -> None:
    """Compared with highdicom's module tables for CT, MR, PET and the enhanced image IODs."""
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

    iods, modules, classes = get_iod_module_map(), get_module_attribute_map(), get_sop_class_iod_map()
    copied = set()
    for sop_class in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128",
                      "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4.1"):
        for module in iods[classes[sop_class]]:
            if module["ie"] in ("Patient", "Study"):
                copied |= {a["keyword"] for a in modules[module["key"]] if not a["path"]}
    assert copied == set(COPIED_KEYWORDS)


@pytest.mark.parametrize(("keyword", "value"), _cases())
def test_every_copied_attribute_with_an_invalid_value(keyword: str, value: object) -> None:
    ds = _raw(keyword, value)
    cleaned, notes = clean_header(ds)
    assert _valid(keyword, cleaned)
    if keyword in TYPE_2 and keyword not in cleaned:
        pytest.fail(f"type 2 {keyword} must stay, empty")
    assert not any(str(value) in note for note in notes if value is not None and len(str(value)) > 2)
    if cleaned is not ds and keyword in cleaned and cleaned[keyword].value:  # repaired: the note says so
        assert any(note.startswith(keyword) and "repaired" in note for note in notes) or dictionary_VR(keyword) == "PN"


@pytest.mark.parametrize(("value", "expected"), [
    ("00000000", ""), ("19010230", ""), ("1901 02 03", "19010203"), ("19010203x", ""), ("2024-01-01", "20240101"),
    ("2024.01.01", "20240101"), ("20240101", "20240101"),
])
def test_dates(value: str, expected: str) -> None:
    cleaned, _ = clean_header(_raw("PatientBirthDate", value))
    assert cleaned.PatientBirthDate == expected


def test_a_single_component_name_keeps_its_meaning_with_its_delimiter() -> None:
    cleaned, notes = clean_header(_raw("PatientName", "Zyxname"))
    assert str(cleaned.PatientName) == "Zyxname^" and notes == []


VRS_OF_THE_MODULES = sorted({dictionary_VR(k) for k in COPIED_KEYWORDS} - {"SQ", "US", "FD", "UI"})
TEXT = st.text(alphabet=st.characters(codec="latin-1"), max_size=80)


@pytest.mark.parametrize("vr", VRS_OF_THE_MODULES)
@settings(max_examples=150, deadline=None)
@given(text=TEXT)
def test_any_text_is_kept_only_when_valid(vr: str, text: str) -> None:
    """Random text of any length and characters, control characters included: what is kept is valid."""
    verdict = check_value("", vr, "1", text)
    kept = text if verdict.action == "keep" else verdict.value if verdict.action == "repair" else None
    if kept is not None:
        validate_value(vr, kept, config.RAISE)


def test_results_from_a_header_full_of_invalid_values(series_volume, options, tmp_path, caplog) -> None:
    """Every copied attribute invalid at once (the first invalid value of its VR): SEG, SR and fallback images are
    written, dciodvfy finds no error, and no value reaches the log."""
    volume = series_volume()
    first: dict[str, object] = {}
    for keyword, value in _cases():
        first.setdefault(keyword, value)
    for ds in volume.datasets:
        for keyword, value in first.items():
            if value is not None:
                _set_raw(ds, keyword, value)
    caplog.set_level(logging.INFO)
    written = write_results(volume, make_result(volume), options, "job-invalid", tmp_path / "out")
    assert [w.kind for w in written][:2] == ["seg", "sr"]
    for item in written:
        assert dciodvfy_errors(item.path) == [], item.kind
    seg = pydicom.dcmread(written[0].path)
    assert seg.PatientBirthDate == "" and seg.StudyDate == "" and "StudyTime" in seg
    assert "00000000" not in caplog.text and "x" * 17 not in caplog.text
    assert "PatientBirthDate: not a valid date (DA); left empty" in caplog.text


def test_a_valid_header_is_not_copied(series_volume) -> None:
    volume = series_volume()
    cleaned, notes = with_valid_headers(volume)
    assert cleaned is volume and notes == []
