"""The receiver's quick scan of identifying elements decides exactly as pydicom does, on good datasets
and on truncated or corrupted ones (where it may hand over to pydicom, never disagree with it)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.receive import dataset as receive_dataset
from node.receive.dataset import Identifiers, read_identifiers
from node.receive.storage import InvalidUID
from tests.support.dicom_factory import ct_series, dataset_bytes_after_meta, with_transfer_syntax, write

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]


def _outcome(stream: bytes, syntax: str, *, quick: bool) -> tuple[str, object]:
    original = receive_dataset._scan
    if not quick:
        receive_dataset._scan = lambda _data, _implicit: None  # type: ignore[assignment]
    try:
        return "ok", read_identifiers(stream, syntax)
    except InvalidUID as exc:
        return "InvalidUID", str(exc)
    except Exception as exc:
        return type(exc).__name__, None
    finally:
        receive_dataset._scan = original


def _variants(tmp_path: Path, syntax: str) -> list[bytes]:
    plain = with_transfer_syntax(next(ct_series(1)), syntax)
    with_sequence = with_transfer_syntax(next(ct_series(1)), syntax)
    item = Dataset()
    item.ReferencedSOPClassUID = plain.SOPClassUID
    item.ReferencedSOPInstanceUID = plain.SOPInstanceUID
    with_sequence.ReferencedImageSequence = Sequence([item])  # (0008,1140), before Series UID
    latin = with_transfer_syntax(next(ct_series(1)), syntax)
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.AccessionNumber = "Å1234"
    spaced = with_transfer_syntax(next(ct_series(1)), syntax)
    spaced.AccessionNumber = " A12 "
    return [dataset_bytes_after_meta(write(ds, tmp_path / f"{n}.dcm"))
            for n, ds in enumerate([plain, with_sequence, latin, spaced])]


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_scan_agrees_with_pydicom_on_whole_datasets(tmp_path: Path, syntax: str) -> None:
    for stream in _variants(tmp_path, syntax):
        quick = _outcome(stream, syntax, quick=True)
        assert quick[0] == "ok" and isinstance(quick[1], Identifiers)
        assert quick == _outcome(stream, syntax, quick=False)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_scan_agrees_with_pydicom_on_damaged_datasets(tmp_path: Path, syntax: str) -> None:
    rng = random.Random(20261125)
    for stream in _variants(tmp_path, syntax):
        header_region = min(len(stream), 600)  # where the identifying elements live
        damaged = [stream[:cut] for cut in range(0, header_region, 7)]
        for _ in range(150):
            data = bytearray(stream)
            for _flip in range(rng.randint(1, 3)):
                data[rng.randrange(header_region)] = rng.randrange(256)
            damaged.append(bytes(data))
        at = stream.index(b"\x08\x00\x16\x00")  # SOP Class UID
        damaged.append(stream[:at] + b"\x08\x00\x05\x00XX\x10\x00" + b"A" * 16 + stream[at:])  # an unknown VR
        for data in damaged:
            assert _outcome(data, syntax, quick=True) == _outcome(data, syntax, quick=False)
