"""What the receiver needs from an encoded C-STORE dataset, without decoding or re-encoding it.

Only the leading identifying elements are parsed (pydicom stops before anything past Series UID);
the bytes written to disk are the peer's bytes, prefixed by a File Meta Information header.
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

from node.storage import validate_uid

SERIES_UID_TAG = 0x0020000E
IDENTIFYING_TAGS = [0x00080016, 0x00080018, 0x00080050, 0x00080060, 0x0020000D, 0x0020000E]
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
    :class:`node.storage.InvalidUID` when a UID is missing or malformed.
    """
    syntax = UID(transfer_syntax)
    data = stream
    if syntax == DeflatedExplicitVRLittleEndian:
        try:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(stream)
        except zlib.error as exc:
            raise UnreadableDataset(f"deflated dataset does not inflate: {exc}") from exc
    implicit = syntax == ImplicitVRLittleEndian
    try:
        dataset: Dataset = read_dataset(
            BytesIO(data),
            is_implicit_VR=implicit,
            is_little_endian=True,
            stop_when=_stop_after_series_uid,
            specific_tags=IDENTIFYING_TAGS,
        )
        values = {tag: dataset.get(tag) for tag in IDENTIFYING_TAGS}
        raw = {tag: (element.value if element is not None else None) for tag, element in values.items()}
    except Exception as exc:  # pydicom raises many types for corrupt input
        raise UnreadableDataset(f"dataset does not parse as {syntax.name}: {type(exc).__name__}: {exc}") from exc
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
