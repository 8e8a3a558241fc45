"""Write a result dataset to a file, encoding a multi-frame SEG's per-frame functional groups quickly.

Why not plain ``Dataset.save_as``: pydicom encodes each of a SEG's per-frame items (one per frame, each holding
about eight nested items) element by element, a large part of writing a SEG. highdicom reuses one
source-image item, one plane-position item and one derivation code for every frame of a plane, so encoding each
distinct item once and reusing its bytes gives the same file in a fraction of the time. pydicom still writes
everything else (file meta, the top-level elements, the pixel data); the per-frame bytes reach it as a raw
element, which it writes unchanged. Anything this encoder does not handle exactly as pydicom would (another
encoding, ambiguous VRs, raw elements) goes through ``save_as`` unchanged.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from pipelines.gc_pause import paused_gc

PER_FRAME_GROUPS = Tag(0x5200, 0x9230)

_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_UNDEFINED = 0xFFFFFFFF


class _NotPlain(Exception):
    """The dataset holds something only pydicom's general writer handles the same way."""


def save(dataset: Dataset, handle: BinaryIO) -> None:
    """Write ``dataset`` to ``handle`` as a DICOM file (preamble, file meta), byte for byte as ``save_as`` would."""
    with paused_gc():
        _save(dataset, handle)


def _save(dataset: Dataset, handle: BinaryIO) -> None:
    raw = _per_frame_element(dataset)
    if raw is None:
        dataset.save_as(handle, enforce_file_format=True)
        return
    view = Dataset()
    for tag in dataset.keys():
        if tag != PER_FRAME_GROUPS:
            view[tag] = dataset[tag]  # raw elements decoded, as save_as decodes them to re-encode
    view = correct_ambiguous_vr(view, True)  # what save_as does to every new dataset, minus the per-frame items
    view[PER_FRAME_GROUPS] = raw  # type: ignore[assignment]
    view.file_meta = dataset.file_meta
    if getattr(dataset, "preamble", None) is not None:
        view.preamble = dataset.preamble
    # Marks the view as already in the file's encoding, so pydicom writes the raw element as it is.
    charset = dataset.get("SpecificCharacterSet", None)
    view.set_original_encoding(False, True, convert_encodings(charset) if charset else default_encoding)
    view.save_as(handle, enforce_file_format=True)


def _per_frame_element(dataset: Dataset) -> RawDataElement | None:
    """The per-frame functional groups as one raw element, or None when the plain writer must do it."""
    file_meta = getattr(dataset, "file_meta", None)
    syntax = UID(file_meta.get("TransferSyntaxUID", "")) if file_meta is not None else UID("")
    if not syntax.is_transfer_syntax or syntax.is_implicit_VR or not syntax.is_little_endian:
        return None
    if PER_FRAME_GROUPS not in dataset:
        return None
    element = dataset.get_item(PER_FRAME_GROUPS)
    if element.is_raw or element.VR != "SQ":
        return None
    encodings = dataset.get("SpecificCharacterSet", None) or "iso8859"
    cache: dict[int, bytes] = {}
    try:
        value = b"".join(_item(item, encodings, cache) for item in element.value)  # type: ignore[union-attr]
    except _NotPlain:
        return None
    length = _UNDEFINED if element.is_undefined_length else len(value)  # type: ignore[union-attr]
    if length == _UNDEFINED:
        value += _SEQUENCE_END
    return RawDataElement(PER_FRAME_GROUPS, "SQ", length, value, 0, False, True)


def _item(item: Dataset, encodings: str | list[str], cache: dict[int, bytes]) -> bytes:
    """One sequence item as pydicom writes it: explicit length unless the item was read with undefined length."""
    body = cache.get(id(item))
    if body is None:
        body = _dataset(item, encodings, cache)
        cache[id(item)] = body  # the items live as long as the dataset being written, so ids stay theirs
    if getattr(item, "is_undefined_length_sequence_item", False):
        return _ITEM + struct.pack("<L", _UNDEFINED) + body + _ITEM_END
    return _ITEM + struct.pack("<L", len(body)) + body


def _dataset(dataset: Dataset, encodings: str | list[str], cache: dict[int, bytes]) -> bytes:
    if "SpecificCharacterSet" in dataset:  # an item with its own character set
        raise _NotPlain
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    for tag in sorted(dataset.keys()):
        if tag.element == 0 and tag.group > 6:  # retired group lengths are not written
            continue
        element = dataset.get_item(tag)
        if element.is_raw or element.VR is None or len(element.VR) != 2:
            raise _NotPlain
        if element.VR == "SQ":
            body = b"".join(_item(item, encodings, cache) for item in element.value)
            _sequence(out, tag, body, element.is_undefined_length)
        else:
            write_data_element(out, element, encodings)
    return out.getvalue()


def _sequence(out: DicomBytesIO, tag: BaseTag, body: bytes, undefined_length: bool) -> None:
    out.write_tag(tag)
    out.write(b"SQ\x00\x00")
    out.write_UL(_UNDEFINED if undefined_length else len(body))
    out.write(body)
    if undefined_length:
        out.write(_SEQUENCE_END)
