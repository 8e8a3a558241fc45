"""Bad input gets a specific status and a log line; the node keeps serving and stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE, _config
from pynetdicom.association import Association

from node.dicom.status import Status
from tests.support.dicom_factory import ct_series, write
from tests.support.node_process import NodeProcess, echo

# Send files as their stored bytes: the node sees exactly the (bad) dataset written below.
_config.STORE_SEND_CHUNKED_DATASET = True


@pytest.fixture
def assoc(node: NodeProcess) -> Iterator[Association]:
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    association = ae.associate("127.0.0.1", node.port, ae_title="PACSNODE")
    assert association.is_established
    yield association
    association.release()


def send_file(assoc: Association, path: Path) -> int:
    status = assoc.send_c_store(path)
    return int(status.Status)


def stored_files(node: NodeProcess) -> set[Path]:
    return set(node.storage_dir.rglob("*.dcm"))


def check_refused(node: NodeProcess, assoc: Association, path: Path, expected: Status, log_text: str) -> None:
    before = stored_files(node)
    assert send_file(assoc, path) == expected
    assert stored_files(node) == before
    node.wait_for(lambda: log_text in node.log(), timeout=5)
    assert echo(node.port)


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_missing_uid(node: NodeProcess, assoc: Association, tmp_path: Path, keyword: str) -> None:
    ds = next(ct_series(1))
    delattr(ds, keyword)
    path = write(ds, tmp_path / "bad.dcm")
    check_refused(node, assoc, path, Status.INVALID_UID, f"{keyword} is missing")


def test_malformed_uid(node: NodeProcess, assoc: Association, tmp_path: Path) -> None:
    ds = next(ct_series(1))
    ds.SeriesInstanceUID = "1.2.03..x/../../etc"
    path = write(ds, tmp_path / "bad.dcm")
    check_refused(node, assoc, path, Status.INVALID_UID, "is not a valid UID")


def test_sop_instance_uid_missing_from_dataset(node: NodeProcess, assoc: Association, tmp_path: Path) -> None:
    ds = next(ct_series(1))
    path = write(ds, tmp_path / "bad.dcm")
    # Keep the file meta (the command's UID) but drop SOP Instance UID from the dataset itself.
    raw = pydicom.dcmread(path)
    del raw.SOPInstanceUID
    raw.save_as(path, enforce_file_format=True)
    check_refused(node, assoc, path, Status.INVALID_UID, "SOPInstanceUID is missing")


def test_sop_class_not_matching_context(node: NodeProcess, assoc: Association, tmp_path: Path) -> None:
    ds = next(ct_series(1))
    path = write(ds, tmp_path / "bad.dcm")
    raw = pydicom.dcmread(path)
    raw.SOPClassUID = MRImageStorage
    raw.file_meta.MediaStorageSOPClassUID = CTImageStorage  # the file meta (and so the context) says CT
    raw.save_as(path)  # not enforce_file_format: that would copy the dataset's SOP class into the meta
    check_refused(node, assoc, path, Status.SOP_CLASS_MISMATCH, "does not match the presentation context")


def test_unparseable_dataset(node: NodeProcess, assoc: Association, tmp_path: Path) -> None:
    ds = next(ct_series(1))
    path = write(ds, tmp_path / "bad.dcm")
    raw = path.read_bytes()
    body_start = raw.index(b"\x08\x00\x16\x00", 132)  # SOP Class UID, the first element after the meta
    path.write_bytes(raw[:body_start] + b"\x08\x00\x05\x00XX\x10\x00" + b"A" * 16)  # an unknown VR
    check_refused(node, assoc, path, Status.CANNOT_PARSE, "does not parse")


def test_good_instance_after_bad_ones_is_stored(node: NodeProcess, assoc: Association, tmp_path: Path) -> None:
    ds = next(ct_series(1))
    path = write(ds, tmp_path / "good.dcm")
    assert send_file(assoc, path) == 0
    expected = node.storage_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert expected.exists()


def test_failures_are_recorded_without_phi(node: NodeProcess) -> None:
    log = node.log()
    assert "status 0x" in log
    for phi in ("Test^Synthetic", "SYN0001", "19700101"):
        assert phi not in log
