"""What the receiver needs from an encoded C-STORE dataset, without decoding or re-encoding it.

Only the leading identifying elements are parsed (nothing past Series UID); the bytes written to disk
are the peer's bytes, prefixed by a File Meta Information header. A plain scan of the top-level
elements reads them several times faster than pydicom; datasets it does not handle (a sequence of undefined
length before Series UID, non-ASCII text, a truncated element) go to pydicom, which decides.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, UID

from node.receive.storage import validate_uid
from node.operate.redaction import describe_error

SERIES_UID_TAG = 0x0020000E
IDENTIFYING_TAGS = [0x00080016, 0x00080018, 0x00080050, 0x00080060, 0x0020000D, 0x0020000E]
_EXPECTED_VR = {0x00080016: b"UI", 0x00080018: b"UI", 0x00080050: b"SH", 0x00080060: b"CS", 0x0020000D: b"UI",
                0x0020000E: b"UI"}
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                              b"UV"})  # explicit VRs with a 4-byte length (PS3.5 7.1.2)
_SHORT_LENGTH_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
                               b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_TAG = struct.Struct("<HH")
_LENGTH_16 = struct.Struct("<H")
_LENGTH_32 = struct.Struct("<I")
IMPLEMENTATION_VERSION = b"PACSNODE_0_1"  # even length, as the VR requires


class UnreadableDataset(ValueError):
    """The dataset cannot be parsed in its negotiated transfer syntax."""


@dataclass(frozen=True)
class Identifiers:
    """The identifying attributes of a received instance (validated UIDs, no PHI)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str | None
    accession_number: str | None


def _stop_after_series_uid(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return tag > SERIES_UID_TAG


def read_identifiers(stream: bytes, transfer_syntax: str) -> Identifiers:
    """Parse the identifying elements of an encoded dataset.

    Raises :class:`UnreadableDataset` when the bytes do not parse, and
    :class:`node.receive.storage.InvalidUID` when a UID is missing or malformed.
    """
    syntax = UID(transfer_syntax)
    data = stream
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(stream)
        except zlib.error as exc:
            raise UnreadableDataset(f"deflated dataset does not inflate: {exc}") from exc
    implicit = syntax == ImplicitVRLittleEndian
    raw = _scan(data, implicit)
    if raw is None:
        raw = _read_with_pydicom(data, implicit, syntax)
    if all(raw[tag] is None for tag in IDENTIFYING_TAGS):
        raise UnreadableDataset(f"no identifying attributes found: not a DICOM data set in {syntax.name}")
    return Identifiers(
        sop_class_uid=validate_uid(raw[0x00080016], "SOPClassUID"),
        sop_instance_uid=validate_uid(raw[0x00080018], "SOPInstanceUID"),
        study_uid=validate_uid(raw[0x0020000D], "StudyInstanceUID"),
        series_uid=validate_uid(raw[0x0020000E], "SeriesInstanceUID"),
        modality=_text(raw[0x00080060]),
        accession_number=_text(raw[0x00080050]),
    )


def _scan(data: bytes | bytearray, implicit: bool) -> dict[int, object] | None:
    """The identifying values from a walk over the top-level elements, or None to ask pydicom."""
    found: dict[int, object] = dict.fromkeys(IDENTIFYING_TAGS)
    offset, end = 0, len(data)
    while offset + 8 <= end:
        group, element = _TAG.unpack_from(data, offset)
        tag = group << 16 | element
        if tag > SERIES_UID_TAG:
            break
        expected_vr = _EXPECTED_VR.get(tag)
        if implicit:
            length, header = _LENGTH_32.unpack_from(data, offset + 4)[0], 8
        else:
            vr = bytes(data[offset + 4 : offset + 6])
            if expected_vr is not None and vr != expected_vr:
                return None
            if vr in _LONG_LENGTH_VRS:
                if offset + 12 > end:
                    return None
                length, header = _LENGTH_32.unpack_from(data, offset + 8)[0], 12
            elif vr in _SHORT_LENGTH_VRS:
                length, header = _LENGTH_16.unpack_from(data, offset + 6)[0], 8
            else:
                return None  # an unknown VR: pydicom names the problem
        start = offset + header
        if length == 0xFFFFFFFF or start + length > end:
            return None
        if expected_vr is not None:
            value = bytes(data[start : start + length])
            if not value.isascii() or b"\\" in value:
                return None  # character sets and multiple values are pydicom's business
            found[tag] = value.decode("ascii").rstrip("\x00 ").strip()  # as pydicom's UI and text conversions
        offset = start + length
    else:
        if offset != end:
            return None  # ends inside an element header
    return found


def _read_with_pydicom(data: bytes | bytearray, implicit: bool, syntax: UID) -> dict[int, object]:
    try:
        dataset: Dataset = read_dataset(
            BytesIO(data),
            is_implicit_VR=implicit,
            is_little_endian=True,
            stop_when=_stop_after_series_uid,
            specific_tags=IDENTIFYING_TAGS,
        )
        values = {tag: dataset.get(tag) for tag in IDENTIFYING_TAGS}
        return {tag: (element.value if element is not None else None) for tag, element in values.items()}
    except Exception as exc:  # pydicom raises many types for corrupt input
        raise UnreadableDataset(f"dataset does not parse as {syntax.name}: {describe_error(exc)}") from exc


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    group, element = divmod(group_element, 0x10000)
    if vr in (b"OB",):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae_title: str | None = None
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group for a received dataset.

    Written by hand because pydicom's general encoder costs more than the rest of the receive path;
    the few fixed elements below are all PS3.10 requires.
    """
    elements = [
        _element(0x00020001, b"OB", b"\x00\x01"),
        _element(0x00020002, b"UI", _padded(sop_class_uid, b"\x00")),
        _element(0x00020003, b"UI", _padded(sop_instance_uid, b"\x00")),
        _element(0x00020010, b"UI", _padded(str(transfer_syntax), b"\x00")),
        _element(0x00020012, b"UI", _padded(PYDICOM_IMPLEMENTATION_UID, b"\x00")),
        _element(0x00020013, b"SH", IMPLEMENTATION_VERSION),
    ]
    if source_ae_title:
        elements.append(_element(0x00020016, b"AE", _padded(source_ae_title.strip(), b" ")))
    body = b"".join(elements)
    group_length = _element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body
