"""write_results: files in DICOM file format, and UIDs fixed by the job so a re-run replaces its objects."""

from __future__ import annotations

import pydicom

from pipelines.results import write_results
from pipelines.types import PipelineResult
from tests.support.results import dciodvfy_errors, make_result


def uids(written):
    return [(w.kind, w.series_uid, w.sop_instance_uid) for w in written]


def test_rerun_of_a_job_gives_the_same_uids_and_another_job_new_ones(series_volume, options, tmp_path):
    volume = series_volume()
    result = make_result(volume)

    first = write_results(volume, result, options, "series-1/ct-tissue", tmp_path / "a")
    again = write_results(volume, result, options, "series-1/ct-tissue", tmp_path / "b")
    other = write_results(volume, result, options, "series-1/ct-lungs", tmp_path / "c")

    assert uids(first) == uids(again)
    assert not {u for _, *pair in uids(first) for u in pair} & {u for _, *pair in uids(other) for u in pair}
    seg, sr = first
    assert seg.series_uid != sr.series_uid  # one modality per series
    assert seg.sop_instance_uid != volume.datasets[0].SOPInstanceUID


def test_written_files_describe_themselves(series_volume, options, tmp_path):
    volume = series_volume()
    written = write_results(volume, make_result(volume), options, "job-files", tmp_path / "out")

    for item in written:
        raw = item.path.read_bytes()
        assert raw[128:132] == b"DICM" and len(raw) == item.size_bytes
        ds = pydicom.dcmread(item.path)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == item.sop_instance_uid
        assert (ds.SOPClassUID, ds.SeriesInstanceUID, ds.StudyInstanceUID) == (
            item.sop_class_uid,
            item.series_uid,
            item.study_uid,
        )
        assert ds.PatientID == volume.datasets[0].PatientID
    assert not list((tmp_path / "out").glob("*.partial"))


def test_a_result_with_nothing_to_report_writes_nothing(series_volume, options, tmp_path):
    volume = series_volume()
    empty = PipelineResult(pipeline="nothing", version="1", algorithm_family=make_result(volume).algorithm_family)

    assert write_results(volume, empty, options, "job-empty", tmp_path / "out") == []
    assert not (tmp_path / "out").exists()


def test_source_without_optional_patient_and_study_attributes_still_gives_valid_objects(series_volume, options, tmp_path):
    volume = series_volume()
    for ds in volume.datasets:
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
            delattr(ds, keyword)
    written = write_results(volume, make_result(volume), options, "job-sparse", tmp_path / "out")

    assert [w.kind for w in written] == ["seg", "sr"]
    for item in written:
        assert dciodvfy_errors(item.path) == [], item.kind
        ds = pydicom.dcmread(item.path)
        assert ds.PatientBirthDate == "" and ds.StudyInstanceUID == volume.datasets[0].StudyInstanceUID


def test_each_result_is_renamed_into_place_then_its_folder_synced(series_volume, options, tmp_path, monkeypatch):
    import pipelines.durable as durable

    synced: list[tuple[str, list[str]]] = []
    real = durable.fsync_directory

    def record(directory):
        synced.append((str(directory), sorted(p.name for p in directory.iterdir())))
        real(directory)

    monkeypatch.setattr(durable, "fsync_directory", record)
    volume = series_volume()
    written = write_results(volume, make_result(volume), options, "series-1/ct-tissue", tmp_path / "out")

    out_syncs = [(folder, names) for folder, names in synced if folder == str(tmp_path / "out")]
    assert len(out_syncs) == len(written)  # (the folder's own creation is synced in its parent, too)
    for item, (_, names) in zip(written, out_syncs):
        assert item.path.name in names and not any(name.endswith(".partial") for name in names)
