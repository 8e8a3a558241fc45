"""The patient and study attributes result objects copy from the source: valid for their VR, or not copied.

Scanners and PACS send header values their VR does not allow (PatientBirthDate ``00000000``, ``19010230``,
StudyDate ``2024-01-01``, an age of ``45Y``, a lower-case code string). The writers (highdicom) copy the Patient,
General Study, Patient Study and Clinical Trial modules from the source images and refuse such values, which
would fail the job for a date nobody reads. Here each copied attribute is checked against its VR (and its VM);
a value the standard lets us read unambiguously is repaired (a date written with separators, as ACR-NEMA's
``yyyy.mm.dd`` was, becomes ``yyyymmdd``; ``hh:mm:ss`` becomes ``hhmmss``; ``45Y`` becomes ``045Y``; a code string
is upper-cased), anything else is left empty (type 2 attributes) or left out, with a note naming the attribute
and never its value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom import config
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import validate_value

from pipelines.types import Volume

# Root attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and Clinical Trial Study
# modules of the image IODs (CT, MR, PET, enhanced), as highdicom copies them (tests compare with its tables).
COPIED_KEYWORDS = (
    "AccessionNumber", "AdditionalPatientHistory", "AdmissionID", "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription", "Allergies", "BreedRegistrationSequence",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSiteName",
    "ClinicalTrialSponsorName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointDescription", "ClinicalTrialTimePointID", "ClinicalTrialTimePointTypeCodeSequence",
    "ConsentForClinicalTrialUseSequence", "ConsultingPhysicianIdentificationSequence", "ConsultingPhysicianName",
    "DeidentificationMethod", "DeidentificationMethodCodeSequence", "EthnicGroupCodeSequence",
    "GeneticModificationsSequence", "GroupOfPatientsIdentificationSequence", "IssuerOfAccessionNumberSequence",
    "IssuerOfAdmissionIDSequence", "IssuerOfClinicalTrialProtocolID", "IssuerOfClinicalTrialSiteID",
    "IssuerOfClinicalTrialSubjectID", "IssuerOfClinicalTrialSubjectReadingID", "IssuerOfClinicalTrialTimePointID",
    "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "IssuerOfServiceEpisodeIDSequence",
    "LastMenstrualDate", "LongitudinalTemporalEventType", "LongitudinalTemporalOffsetFromEvent",
    "MeasuredAPDimension", "MeasuredLateralDimension", "MedicalAlerts", "NameOfPhysiciansReadingStudy",
    "Occupation", "OtherClinicalTrialProtocolIDsSequence", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientAge", "PatientAlternativeCalendar", "PatientBirthDate", "PatientBirthDateInAlternativeCalendar",
    "PatientBirthTime", "PatientBodyMassIndex", "PatientBreedCodeSequence", "PatientBreedDescription",
    "PatientComments", "PatientDeathDateInAlternativeCalendar", "PatientID", "PatientIdentityRemoved",
    "PatientName", "PatientSex", "PatientSexNeutered", "PatientSize", "PatientSizeCodeSequence",
    "PatientSpeciesCodeSequence", "PatientSpeciesDescription", "PatientState", "PatientWeight",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "PregnancyStatus", "ProcedureCodeSequence", "QualityControlSubject", "ReasonForPerformedProcedureCodeSequence",
    "ReasonForVisit", "ReasonForVisitCodeSequence", "ReferencedPatientPhotoSequence", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferringPhysicianIdentificationSequence", "ReferringPhysicianName",
    "RequestingService", "RequestingServiceCodeSequence", "ResponsibleOrganization", "ResponsiblePerson",
    "ResponsiblePersonRole", "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus",
    "SourcePatientGroupIdentificationSequence", "StrainAdditionalInformation", "StrainCodeSequence",
    "StrainDescription", "StrainNomenclature", "StrainStockSequence", "StudyDate", "StudyDescription", "StudyID",
    "StudyInstanceUID", "StudyTime", "TypeOfPatientID",
)
TYPE_2 = frozenset({"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"})
"""Required but possibly empty: an invalid value leaves them empty rather than out."""
ENUMERATED = {
    "PatientSex": frozenset({"M", "F", "O"}), "PatientIdentityRemoved": frozenset({"YES", "NO"}),
    "QualityControlSubject": frozenset({"YES", "NO"}), "SmokingStatus": frozenset({"YES", "NO", "UNKNOWN"}),
    "PatientSexNeutered": frozenset({"ALTERED", "UNALTERED"}), "TypeOfPatientID": frozenset({"TEXT", "RFID", "BARCODE"}),
    "LongitudinalTemporalEventType": frozenset({"ENROLLMENT", "BASELINE"}),
}
"""Code strings whose values PS3.3 enumerates (Patient, Patient Study and Clinical Trial modules)."""
PARTNERS = {"ResponsiblePerson": ("ResponsiblePersonRole",), "ResponsiblePersonRole": ("ResponsiblePerson",),
            "PatientAlternativeCalendar": ("PatientBirthDateInAlternativeCalendar",
                                           "PatientDeathDateInAlternativeCalendar")}
"""Type 1C pairs (PS3.3 C.7.1.1): once every partner of an attribute is left out, so is the attribute."""
_COPIED_TAGS = tuple(int(tag_for_keyword(keyword)) for keyword in COPIED_KEYWORDS)  # type: ignore[arg-type]

_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DATE_SEPARATED = re.compile(r"^(\d{4})[-./ ](\d{1,2})[-./ ](\d{1,2})$")
_TIME = re.compile(r"^(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?$")
_TIME_COLONS = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")
_DATETIME = re.compile(r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?)?)?)?"
                       r"(?:[+-](\d{2})(\d{2}))?$")
_AGE = re.compile(r"^\d{3}[DWMY]$")
_AGE_UNPADDED = re.compile(r"^(\d{1,3})\s*([DWMY])$")
_CONTROL = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")  # control characters but ESC
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # LT, ST, UT also allow TAB, LF, FF, CR
_LONG_TEXT = frozenset({"LT", "ST", "UT", "UC"})
_NUMBERS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"})
_CHECKED_BY_PYDICOM = frozenset({"AE", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UI", "UR", "UT"})


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to do with one attribute: keep it, replace its value (repaired), or drop it (left empty or out)."""

    action: str  # "keep", "repair" or "drop"
    value: Any = None
    note: str = ""


KEEP = Verdict("keep")


def _real_date(year: str, month: str, day: str) -> bool:
    try:
        dt.date(int(year), int(month), int(day))
    except ValueError:
        return False
    return True


def _real_time(hours: str | None, minutes: str | None, seconds: str | None) -> bool:
    return int(hours or 0) < 24 and int(minutes or 0) < 60 and int(seconds or 0) <= 60


def _date(text: str) -> Verdict:
    if (match := _DATE.match(text)) and _real_date(*match.groups()):
        return KEEP
    if (match := _DATE_SEPARATED.match(text)) and _real_date(*match.groups()):
        year, month, day = match.groups()
        return Verdict("repair", f"{year}{int(month):02d}{int(day):02d}", "a date written with separators")
    return Verdict("drop", note="not a valid date (DA)")


def _time(text: str) -> Verdict:
    if (match := _TIME.match(text)) and _real_time(*match.groups()):
        return KEEP
    if (match := _TIME_COLONS.match(text)) and _real_time(*match.groups()[:3]):
        hours, minutes, seconds, fraction = match.groups()
        return Verdict("repair", f"{hours}{minutes}{seconds or ''}{fraction or ''}", "a time written with colons")
    return Verdict("drop", note="not a valid time (TM)")


def _datetime(text: str) -> Verdict:
    match = _DATETIME.match(text)
    if match:
        year, month, day, hours, minutes, seconds, zone_hours, zone_minutes = match.groups()
        date_ok = _real_date(year, month or "01", day or "01")
        zone_ok = zone_hours is None or (int(zone_hours) <= 14 and int(zone_minutes) < 60)
        if date_ok and zone_ok and _real_time(hours, minutes, seconds):
            return KEEP
    return Verdict("drop", note="not a valid date and time (DT)")


def _age(text: str) -> Verdict:
    if _AGE.match(text):
        return KEEP
    if match := _AGE_UNPADDED.match(text):
        return Verdict("repair", f"{int(match.group(1)):03d}{match.group(2)}", "an age without leading zeros")
    return Verdict("drop", note="not a valid age (AS)")


def _by_pydicom(vr: str, text: Any) -> bool:
    try:
        validate_value(vr, text, config.RAISE)
    except (ValueError, TypeError):
        return False
    if isinstance(text, str):
        return not (_TEXT_CONTROL if vr in _LONG_TEXT else _CONTROL).search(text)
    return True


def _person_name(text: str) -> Verdict:
    if not _by_pydicom("PN", text) or any(group.count("^") > 4 for group in text.split("=")) or text.count("=") > 2:
        return Verdict("drop", note="not a valid person name (PN)")
    if text and "^" not in text and "=" not in text:
        return Verdict("repair", text + "^")  # a family name alone, with its delimiter: the same name, unambiguous
    return KEEP


def _code_string(text: str) -> Verdict:
    if _by_pydicom("CS", text):
        return KEEP
    upper = text.strip().upper()
    if _by_pydicom("CS", upper):
        return Verdict("repair", upper, "a code string in lower case")
    return Verdict("drop", note="not a valid code string (CS)")


_TEXT_CHECKS = {"DA": _date, "TM": _time, "DT": _datetime, "AS": _age, "PN": _person_name, "CS": _code_string}


def _one_value(vr: str, value: Any) -> Verdict:
    if vr in _NUMBERS:
        return KEEP if _by_pydicom(vr, value) else Verdict("drop", note=f"not a valid {vr} number")
    text = str(value)
    if vr in ("DA", "TM", "DT", "AS") and text != text.strip():
        verdict = _one_value(vr, text.strip())  # padding is not part of the value
        return Verdict("repair", text.strip()) if verdict.action == "keep" else verdict
    if vr in ("DA", "TM", "DT", "AS") and not text:
        return KEEP
    check = _TEXT_CHECKS.get(vr)
    if check is not None:
        return check(text)
    if vr in _CHECKED_BY_PYDICOM and not _by_pydicom(vr, value if vr in ("DS", "IS") else text):
        return Verdict("drop", note=f"not a valid {vr} value")
    return KEEP


def check_value(keyword: str, vr: str, vm: str, value: Any) -> Verdict:
    """The verdict on one attribute's value (of any VR and VM); notes never hold the value."""
    values = list(value) if isinstance(value, MultiValue | list) else [value]
    if vm == "1" and len(values) > 1:
        return Verdict("drop", note="holds several values where one is allowed")
    verdicts = [_one_value(vr, item) for item in values if item is not None]
    if any(v.action == "drop" for v in verdicts):
        return next(v for v in verdicts if v.action == "drop")
    allowed = ENUMERATED.get(keyword)
    if allowed is not None and values and str(values[0]).strip():
        final = next((v.value for v in verdicts if v.action == "repair"), str(values[0]).strip())
        if final not in allowed:
            return Verdict("drop", note=f"not one of {', '.join(sorted(allowed))}")
    if not any(v.action == "repair" for v in verdicts):
        return KEEP
    repaired = [v.value if v.action == "repair" else item for v, item in zip(verdicts, values)]
    note = "; ".join(dict.fromkeys(v.note for v in verdicts if v.note))
    return Verdict("repair", repaired[0] if len(repaired) == 1 else repaired, note)


@contextmanager
def _quiet_reading() -> Iterator[None]:
    """Decode values without pydicom's validation warnings, which quote the (invalid) value."""
    mode = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode = mode


def _clean_items(sequence: Sequence) -> tuple[Sequence | None, list[str]]:
    """A copy of ``sequence`` with every item's invalid elements dropped, or None when all are valid."""
    notes: list[str] = []
    items, changed = [], False
    for item in sequence:
        cleaned, item_notes = _clean(item, [int(element.tag) for element in item])
        notes.extend(item_notes)
        changed = changed or cleaned is not item
        items.append(cleaned)
    return (Sequence(items) if changed else None), notes


def _verdict_of(element: DataElement, keyword: str, vr: str) -> tuple[Verdict, list[str]]:
    if vr == "SQ":
        cleaned, notes = _clean_items(element.value or [])
        return (KEEP if cleaned is None else Verdict("repair", cleaned)), notes
    return check_value(keyword, vr, dictionary_VM(element.tag) if keyword else "1-n", element.value), []


def _clean(dataset: Dataset, tags: list[int] | tuple[int, ...]) -> tuple[Dataset, list[str]]:
    """``dataset`` itself when its ``tags`` are all valid, else a shallow copy with them repaired or dropped."""
    changes: list[tuple[int, str, Verdict]] = []
    notes: list[str] = []
    for tag in tags:
        if tag not in dataset:
            continue
        keyword = keyword_for_tag(tag)
        try:
            element = dataset[tag]
        except Exception:  # noqa: BLE001 - pydicom cannot even convert the bytes (a DS of letters, a short US)
            vr = dictionary_VR(tag) if keyword else "UN"
            changes.append((tag, vr, Verdict("drop", note=f"not readable as {vr}")))
            continue
        vr = element.VR if element.VR and element.VR != "UN" else (dictionary_VR(tag) if keyword else "UN")
        verdict, inner = _verdict_of(element, keyword, vr)
        notes.extend(f"{keyword or f'({tag >> 16:04X},{tag & 0xFFFF:04X})'} in {n}" for n in inner)
        if verdict.action != "keep":
            changes.append((tag, vr, verdict))
    dropped = {keyword_for_tag(tag) for tag, _, verdict in changes if verdict.action == "drop"}
    for keyword, partners in PARTNERS.items():
        tag = int(tag_for_keyword(keyword))  # type: ignore[arg-type]
        present = [partner for partner in partners if partner in dataset]
        if present and set(present) <= dropped and tag in tags and tag in dataset and keyword not in dropped:
            changes.append((tag, dictionary_VR(tag), Verdict("drop", note=f"left without {' or '.join(partners)}")))
    if not changes:
        return dataset, notes
    copy = Dataset()
    copy.update(dataset)
    if hasattr(dataset, "file_meta"):
        copy.file_meta = dataset.file_meta
    for tag, vr, verdict in changes:
        keyword = keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if verdict.action == "repair":
            copy[tag] = DataElement(tag, vr, verdict.value)
            if verdict.note:
                notes.append(f"{keyword}: {verdict.note}, repaired")
        elif keyword in TYPE_2:
            copy[tag] = DataElement(tag, vr, "")
            notes.append(f"{keyword}: {verdict.note}; left empty")
        else:
            del copy[tag]
            notes.append(f"{keyword}: {verdict.note}; left out")
    return copy, notes


def clean_header(dataset: Dataset) -> tuple[Dataset, list[str]]:
    """``dataset`` with its copied patient and study attributes valid (itself when they already are), and notes
    naming each attribute repaired, left empty or left out."""
    with _quiet_reading():
        return _clean(dataset, _COPIED_TAGS)


def with_valid_headers(volume: Volume) -> tuple[Volume, list[str]]:
    """``volume`` with every source header's copied attributes valid (the same object when they already are),
    and the notes (each once) for the series."""
    datasets, notes = [], []
    memo: dict[tuple, tuple[Dataset | None, list[str]]] = {}
    with _quiet_reading():
        for dataset in volume.datasets:
            key = tuple(_raw_value(dataset, tag) for tag in _COPIED_TAGS)
            if key not in memo:
                cleaned, found = _clean(dataset, _COPIED_TAGS)
                memo[key] = (None if cleaned is dataset else cleaned, found)
                notes.extend(found)
            replacement = memo[key][0]
            datasets.append(dataset if replacement is None else _with_attributes_of(dataset, replacement))
    if all(a is b for a, b in zip(datasets, volume.datasets)):
        return volume, list(dict.fromkeys(notes))
    return dataclasses.replace(volume, datasets=datasets), list(dict.fromkeys(notes))


def _raw_value(dataset: Dataset, tag: int) -> object:
    """The attribute as stored (bytes until pydicom converts it), to tell identical headers apart cheaply."""
    if tag not in dataset:
        return None
    value = dataset.get_item(tag).value
    return value if isinstance(value, bytes | str | int | float) else repr(value)


def _with_attributes_of(dataset: Dataset, cleaned: Dataset) -> Dataset:
    """``dataset`` (shallow copy) with the copied attributes as ``cleaned`` holds them."""
    if cleaned.SOPInstanceUID == dataset.SOPInstanceUID:
        return cleaned
    copy = Dataset()
    copy.update(dataset)
    if hasattr(dataset, "file_meta"):
        copy.file_meta = dataset.file_meta
    for tag in _COPIED_TAGS:
        if tag in cleaned:
            copy[tag] = cleaned[tag]
        elif tag in copy:
            del copy[tag]
    return copy
