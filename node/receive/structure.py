"""Whether an encoded data set is whole: every element, item and sequence read to its end, before Success.

A sender that sends a file cut short (a disk error, an interrupted copy) gives a data set that parses up to the
identifying elements and ends inside a later one, typically Pixel Data. Such an instance must be refused when it
arrives, not found later by the job that reads the series. This walks the element structure (tags, lengths,
nested items and encapsulated fragments, little endian, explicit or implicit VR) without decoding values, and
checks that native Pixel Data holds at least the bytes its image needs. It never names a value, only tags and lengths.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, UID

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
MAX_DEPTH = 32  # nested sequences; deeper is not a real data set
PIXEL_DATA = 0x7FE00010
_IMAGE_TAGS = {0x00280002: "samples", 0x00280008: "frames", 0x00280010: "rows", 0x00280011: "columns",
               0x00280100: "bits"}
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                              b"UV"})  # explicit VRs with a 4-byte length (PS3.5 7.1.2)
_SHORT_LENGTH_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
                               b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
_SHORT_LENGTH_CODES = frozenset(int.from_bytes(vr, "little") for vr in _SHORT_LENGTH_VRS)
_LONG_LENGTH_CODES = frozenset(int.from_bytes(vr, "little") for vr in _LONG_LENGTH_VRS)
_OB_OW = frozenset(int.from_bytes(vr, "little") for vr in (b"OB", b"OW"))
_SQ, _UN = int.from_bytes(b"SQ", "little"), int.from_bytes(b"UN", "little")
_NOTED = frozenset({PIXEL_DATA, *_IMAGE_TAGS})
_TAG_LENGTH = struct.Struct("<HHI")  # group, element, 32-bit length (implicit VR, items, delimiters)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class IncompleteDataset(ValueError):
    """The data set does not parse to its end; the message names the element and the lengths."""


@dataclass
class _Image:
    """The top-level elements that say how many bytes native Pixel Data needs."""

    values: dict[str, int] = field(default_factory=dict)
    pixel_bytes: int | None = None

    def needed(self) -> int | None:
        rows, columns = self.values.get("rows"), self.values.get("columns")
        if not rows or not columns or not self.values.get("bits"):
            return None
        samples = min(self.values.get("samples", 1), 2)  # YBR_FULL_422 holds two samples a pixel: a lower bound
        bits = rows * columns * samples * self.values["bits"] * self.values.get("frames", 1)
        return (bits + 7) // 8


def check_complete(stream: bytes | bytearray, transfer_syntax: str) -> None:
    """Raise :class:`IncompleteDataset` unless ``stream`` is a whole data set in ``transfer_syntax``."""
    syntax = UID(transfer_syntax)
    data: bytes | bytearray = stream
    if syntax == DeflatedExplicitVRLittleEndian:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(stream)
        except zlib.error as exc:
            raise IncompleteDataset(f"deflated data set does not inflate: {exc}") from exc
        if not inflater.eof:
            raise IncompleteDataset("deflated data set ends before its deflate stream does")
    image = _Image()
    view = memoryview(data)
    implicit = syntax == ImplicitVRLittleEndian or _looks_implicit(view)
    _Walker(view, implicit, image).dataset(0, len(data), depth=0)
    needed = image.needed()
    if needed is not None and image.pixel_bytes is not None and image.pixel_bytes < needed:
        raise IncompleteDataset(f"Pixel Data (7FE0,0010) holds {image.pixel_bytes} bytes; Rows, Columns, Samples "
                                f"per Pixel, Bits Allocated and Number of Frames need {needed}")


def _looks_implicit(data: memoryview) -> bool:
    """True when an explicit VR data set's first element has no VR: written in implicit VR by mistake, which
    readers (pydicom, DCMTK) accept, so the walk does too."""
    if len(data) < 8:
        return False
    vr = bytes(data[4:6])
    return vr not in _LONG_LENGTH_VRS and vr not in _SHORT_LENGTH_VRS


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    def __init__(self, data: memoryview, implicit: bool, image: _Image) -> None:
        self.data, self.implicit, self.image = data, implicit, image

    def dataset(self, offset: int, end: int, depth: int, *, in_item: bool = False) -> int:
        """Walk elements from ``offset`` to ``end`` (or to the item delimiter of an undefined-length item)."""
        data, implicit, unpack = self.data, self.implicit, _TAG_LENGTH.unpack_from
        while offset < end:
            if offset + 8 > end:
                raise IncompleteDataset(f"ends inside an element header at byte {offset} of {len(data)}")
            group, element, length = unpack(data, offset)
            tag = group << 16 | element
            if implicit or group == 0xFFFE:
                if tag == ITEM_END and in_item:
                    return offset + 8
                vr, start = None, offset + 8
            else:  # ``length`` holds the VR (low 16 bits) and a 16-bit length (high 16 bits)
                vr = length & 0xFFFF
                if vr in _SHORT_LENGTH_CODES:
                    length, start = length >> 16, offset + 8
                elif vr in _LONG_LENGTH_CODES:
                    if offset + 12 > end:
                        raise IncompleteDataset(f"ends inside the header of element {_tag_text(tag)}")
                    length, start = _U32.unpack_from(data, offset + 8)[0], offset + 12
                else:
                    raise IncompleteDataset(f"element {_tag_text(tag)} has an unknown VR")
            if length == UNDEFINED:
                offset = self._undefined(tag, vr, start, end, depth)
                continue
            if start + length > end:
                raise IncompleteDataset(f"element {_tag_text(tag)} declares {length} bytes but {end - start} remain")
            if depth == 0 and tag in _NOTED:
                self._note_image(tag, vr, start, length)
            offset = start + length
        if in_item:
            raise IncompleteDataset("an item of undefined length ends without its delimiter")
        return offset

    def _undefined(self, tag: int, vr: int | None, start: int, end: int, depth: int) -> int:
        """Walk a value of undefined length: encapsulated fragments or a sequence's items; the offset after it."""
        if depth >= MAX_DEPTH:
            raise IncompleteDataset(f"sequences nested deeper than {MAX_DEPTH} levels at {_tag_text(tag)}")
        if vr in _OB_OW or (vr is None and tag == PIXEL_DATA):
            return self._items(tag, start, end, depth, fragments=True)
        if vr in (None, _SQ, _UN):
            implicit = self.implicit
            self.implicit = self.implicit or vr == _UN  # UN of undefined length holds implicit VR (PS3.5 6.2.2)
            try:
                return self._items(tag, start, end, depth, fragments=False)
            finally:
                self.implicit = implicit
        raise IncompleteDataset(f"element {_tag_text(tag)} has an undefined length its VR does not allow")

    def _items(self, tag: int, offset: int, end: int, depth: int, *, fragments: bool) -> int:
        data = self.data
        while offset + 8 <= end:
            group, element, length = _TAG_LENGTH.unpack_from(data, offset)
            item_tag = group << 16 | element
            if item_tag == SEQUENCE_END:
                return offset + 8
            if item_tag != ITEM:
                raise IncompleteDataset(f"{_tag_text(tag)} holds {_tag_text(item_tag)} where an item must be")
            start = offset + 8
            if length == UNDEFINED and not fragments:
                offset = self.dataset(start, end, depth + 1, in_item=True)
            elif length == UNDEFINED or start + length > end:
                raise IncompleteDataset(f"an item of {_tag_text(tag)} declares {length} bytes but {end - start} remain")
            else:
                offset = start + length
        raise IncompleteDataset(f"{_tag_text(tag)} of undefined length ends without its delimiter")

    def _note_image(self, tag: int, vr: int | None, start: int, length: int) -> None:
        if tag == PIXEL_DATA and (vr is None or vr in _OB_OW):
            self.image.pixel_bytes = length
            return
        name = _IMAGE_TAGS.get(tag)
        if name is None:
            return
        raw = self.data[start : start + length]
        if name == "frames":  # IS: text
            text = bytes(raw).decode("ascii", "replace").strip(" \x00")
            if text.isdigit():
                self.image.values[name] = int(text)
        elif length == 2:
            self.image.values[name] = _U16.unpack_from(raw)[0]
