"""Counts a series' data declares: trusted for PET (mandatory attributes), never for CT or MR headers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

from node.assemble.completion import tick
from node.assemble.declared import consistent_count, declared_instances
from node.config import Settings
from node.db import Series, open_database, utcnow
from node.receive.dataset import Identifiers
from node.receive.instances import Received, record_instance


def pet_header(series_type: str = "STATIC", slices: int = 3, **counts: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "PT"
    ds.SeriesType = [series_type, "IMAGE"]
    ds.NumberOfSlices = slices
    for keyword, value in counts.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(("header", "count"), [
    (pet_header("STATIC", 47), 47),
    (pet_header("WHOLE BODY", 311), 311),
    (pet_header("DYNAMIC", 47, NumberOfTimeSlices=12), 564),
    (pet_header("GATED", 47, NumberOfTimeSlots=8, NumberOfRRIntervals=1), 376),
    (pet_header("DYNAMIC", 47), None),  # the time slices it needs are missing
    (pet_header("REPROJECTION", 47), None),  # no count defined
    (pet_header("STATIC", 0), None),
])
def test_pet_series_declare_their_size(header: Dataset, count: int | None) -> None:
    assert declared_instances(header) == count


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_ct_and_mr_headers_declare_nothing(name: str) -> None:
    assert declared_instances(dcmread(get_testdata_file(name), stop_before_pixels=True)) is None


def test_counts_must_agree_between_first_and_latest_instance() -> None:
    assert consistent_count(pet_header(slices=3), pet_header(slices=3)) == 3
    assert consistent_count(pet_header(slices=3), pet_header(slices=4)) is None


def _write_pet(path: Path, study_uid: str, series_uid: str, index: int, slices: int) -> Dataset:
    ds = pet_header("STATIC", slices, ImageIndex=index + 1)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def test_pet_series_completes_by_its_count_while_its_association_is_open(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    study_uid, series_uid = generate_uid(), generate_uid()

    def send(index: int) -> None:
        path = tmp_path / "files" / f"{index:03d}.dcm"
        ds = _write_pet(path, study_uid, series_uid, index, slices=3)
        ids = Identifiers(ds.SOPClassUID, ds.SOPInstanceUID, study_uid, series_uid, "PT", None)
        with database.engine.begin() as connection:
            record_instance(connection, Received(ids, ExplicitVRLittleEndian, str(path), 100, "PETCT", "PACSNODE",
                                                 "127.0.0.1", "open-association", index == 0))

    def state_at(seconds: float) -> str:
        tick(Settings(), database, now=utcnow() + dt.timedelta(seconds=seconds))
        with database.session() as session:
            return session.get(Series, series_uid).state.value

    send(0)
    send(1)
    assert state_at(2.5) == "receiving"  # two of three: the association is open, no count reached
    send(2)
    assert state_at(1.0) == "receiving"  # the settle time has not passed
    assert state_at(2.5) == "complete"
    with database.session() as session:
        assert session.get(Series, series_uid).completed_by.value == "declared"
    database.dispose()
