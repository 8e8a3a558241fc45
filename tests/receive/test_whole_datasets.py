"""An instance is read to its end before Success: a file cut short is refused with a failure status and a log
line naming the element, stores nothing, and leaves its series (and an already stored copy) unharmed. The sender
is pynetdicom sending the files' bytes as they are (DCMTK will not send a file it cannot read)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import pytest

from node.dicom.scu import send_objects
from node.dicom.status import Status
from node.receive.structure import IncompleteDataset, check_complete
from tests.support.dicom_factory import dataset_bytes_after_meta, write_series
from tests.support.node_process import NodeProcess

pytestmark = pytest.mark.timeout(120)


def _cut(path: Path, fraction: float, target: Path) -> Path:
    raw = path.read_bytes()
    target.write_bytes(raw[: int(len(raw) * fraction)])
    return target


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_truncated_instance_is_refused_and_its_series_unharmed(node: NodeProcess, tmp_path: Path) -> None:
    files = write_series(tmp_path / "series", 10, rows=128, columns=128)
    cut = _cut(files[4], 0.6, tmp_path / "cut.dcm")
    outcomes = send_objects([*files[:4], cut, *files[5:]], "PACSNODE", "127.0.0.1", node.port, calling_ae_title="CT1")
    assert [o.status for o in outcomes] == [0] * 4 + [Status.CANNOT_PARSE] + [0] * 5
    uid = outcomes[4].sop_instance_uid
    stored = sorted(node.storage_dir.rglob("*.dcm"))
    assert len(stored) == 9 and not any(uid in p.name for p in stored)
    assert not list(node.storage_dir.rglob("*.partial"))
    log = node.wait_for(lambda: node.log() if f"rejected instance {uid}" in node.log() else None, timeout=5)
    assert "the data set is not whole: element (7FE0,0010) declares 32768 bytes" in log
    node.wait_for(lambda: node.series_states() == {"unrouted": 1}, timeout=30)  # complete, no route configured
    assert [s.instance_count for s in node.series()] == [9]

    # The whole instance is stored afterwards; a truncated copy of it sent again leaves it as it is.
    assert send_objects([files[4]], "PACSNODE", "127.0.0.1", node.port)[0].status == 0
    [kept] = [p for p in node.storage_dir.rglob("*.dcm") if uid in p.name]
    before = _digest(kept)
    assert send_objects([cut], "PACSNODE", "127.0.0.1", node.port)[0].status == Status.CANNOT_PARSE
    assert _digest(kept) == before


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9, 0.999])
def test_every_cut_of_an_instance_is_found(tmp_path: Path, fraction: float) -> None:
    """Cut anywhere after the identifying elements, a data set is found incomplete; whole, it is not."""
    [path] = write_series(tmp_path / "one", 1, rows=32, columns=32)
    body = dataset_bytes_after_meta(path)
    syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    check_complete(body, syntax)
    with pytest.raises(IncompleteDataset):
        check_complete(body[: int(len(body) * fraction)], syntax)


def test_pixel_data_shorter_than_its_image_is_found(tmp_path: Path) -> None:
    """Pixel Data whose own length is consistent but holds fewer bytes than Rows x Columns x Bits need."""
    [path] = write_series(tmp_path / "one", 1, rows=32, columns=32)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(tmp_path / "short.dcm", enforce_file_format=True)
    with pytest.raises(IncompleteDataset, match="Pixel Data .* holds 1024 bytes"):
        check_complete(dataset_bytes_after_meta(tmp_path / "short.dcm"), str(ds.file_meta.TransferSyntaxUID))


def test_pydicom_test_files_that_are_whole_pass_and_truncated_ones_do_not() -> None:
    """Real files of every kind pydicom ships (sequences, encapsulated pixel data, deflate, implicit VR): the
    little endian ones pass, except the two it ships truncated."""
    import pydicom.data

    refused = set()
    for name in sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm")):  # no download
        try:
            syntax = pydicom.dcmread(name, stop_before_pixels=True).file_meta.TransferSyntaxUID
        except Exception:  # files pydicom ships to test its own failures
            continue
        if not syntax.is_little_endian:
            continue
        try:
            check_complete(dataset_bytes_after_meta(Path(name)), str(syntax))
        except IncompleteDataset:
            refused.add(Path(name).name)
    assert refused == {"rtplan_truncated.dcm", "MR_truncated.dcm"}
