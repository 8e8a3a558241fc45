"""Storage, identifiers and file meta on real files, without a network."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from node.config import LoggingConfig
from node.operate.logging_setup import configure_logging
from node.receive.dataset import file_meta_header, read_identifiers
from node.receive.storage import InvalidUID, instance_path, remove_partials, validate_uid, write_durably
from tests.support.dicom_factory import ct_series, dataset_bytes_after_meta, with_transfer_syntax, write


@pytest.mark.parametrize("bad", ["", None, "1.2.03", "1..2", "1.2.", "../../etc", "1.2.3/4", "1." + "2" * 70, "a.b"])
def test_invalid_uids_are_refused(bad: object) -> None:
    with pytest.raises(InvalidUID):
        validate_uid(bad, "SeriesInstanceUID")


def test_instance_path_never_leaves_storage(tmp_path: Path) -> None:
    assert instance_path(tmp_path, "1.2", "1.2.3", "1.2.3.4") == tmp_path / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    with pytest.raises(InvalidUID, match="StudyInstanceUID"):
        instance_path(tmp_path, "..", "1.2.3", "1.2.3.4")


def test_write_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    assert write_durably(path, [b"abc", b"def"]) == 6
    assert write_durably(path, [b"xyz"]) == 3
    assert path.read_bytes() == b"xyz"
    assert [p.name for p in path.parent.iterdir()] == ["1.2.3.4.dcm"]


def test_partials_left_by_a_crash_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "1.2" / "1.2.3"
    folder.mkdir(parents=True)
    (folder / ".1.2.3.4.dcm.123.abc.partial").write_bytes(b"half")
    (folder / "1.2.3.5.dcm").write_bytes(b"whole")
    assert remove_partials(tmp_path) == 1
    assert [p.name for p in folder.iterdir()] == ["1.2.3.5.dcm"]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_identifiers_and_file_meta_round_trip(tmp_path: Path, syntax: str) -> None:
    ds = with_transfer_syntax(next(ct_series(1)), syntax)
    source = write(ds, tmp_path / "in.dcm")
    body = dataset_bytes_after_meta(source)
    ids = read_identifiers(body, syntax)
    assert (ids.sop_instance_uid, ids.series_uid, ids.study_uid, ids.modality) == (
        ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, "CT")
    out = tmp_path / "out.dcm"
    out.write_bytes(file_meta_header(ids.sop_class_uid, ids.sop_instance_uid, syntax, "SCANNER") + body)
    back = pydicom.dcmread(out)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.file_meta.SourceApplicationEntityTitle == "SCANNER"
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.pixel_array.tobytes() == ds.pixel_array.tobytes()


def test_json_logging_is_one_object_per_line() -> None:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level="INFO", json=True), stream=stream)
    try:
        logging.getLogger("node.test").info("stored %s", "1.2.3")
        entry = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert entry["message"] == "stored 1.2.3" and entry["level"] == "INFO"
    finally:
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
