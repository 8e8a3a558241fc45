"""Header values scanners and PACS really send, through a running node to SEG and SR in Orthanc: invalid birth and
study dates (PS3.5 does not allow them) are repaired or left empty and every job succeeds; the study's patient
values, distinctive on purpose, appear in no log line (plain text and JSON), job reason, event or audit detail."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom import config
from sqlalchemy import select

from node.db import AuditEvent, Delivery, DeliveryState, Job, JobState, NodeEvent, Series
from tests.support.dcmtk import storescu
from tests.support.dicom_factory import write_series
from tests.support.node_process import NodeProcess
from tests.support.orthanc import Orthanc

pytestmark = pytest.mark.timeout(240)

NAME, PATIENT_ID = "Qzxwvkj", "PIDQ7X3Z9"  # one component: highdicom warns about such names, quoting them
# (attribute, value sent, value expected in the results)
VARIANTS = [
    ("PatientBirthDate", "00000000", ""),
    ("PatientBirthDate", "19010230", ""),
    ("PatientBirthDate", "1901 02 03", "19010203"),
    ("PatientBirthDate", "19010203x", ""),
    ("StudyDate", "2024-01-01", "20240101"),
]
SENT_VALUES = [NAME, PATIENT_ID, "00000000", "19010230", "1901 02 03", "19010203x", "2024-01-01"]


def _series(root: Path, number: int, keyword: str, value: str) -> tuple[str, list[Path]]:
    study_uid = f"1.2.826.0.1.3680043.8.498.1818.{number}"  # short: the factory derives the frame of reference
    files = write_series(root / f"series{number}", 4, study_uid=study_uid)
    for path in files:
        ds = pydicom.dcmread(path)
        with config.disable_value_validation():
            ds.PatientName, ds.PatientID = NAME, PATIENT_ID
            ds.PatientBirthDate = "19700101"
            setattr(ds, keyword, value)
        ds.save_as(path, enforce_file_format=True)
    return study_uid, files


def _results_in(orthanc: Orthanc, study_uid: str) -> dict[str, pydicom.Dataset]:
    found = {}
    for series in orthanc.series_of_study(study_uid):
        modality = series["MainDicomTags"].get("Modality")
        for instance in series["Instances"]:
            found[modality] = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
    return found


@pytest.fixture(params=[True, False], ids=["json", "text"])
def node(request: pytest.FixtureRequest, tmp_path: Path, orthanc: Orthanc) -> NodeProcess:
    extra = {
        "queue": {"embedded_worker": True},
        "pipelines": [{"name": "threshold", "factory": "tests.support.pipelines:ThresholdPipeline"}],
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port, "outputs": ["seg", "sr"]}],
        "routes": [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["threshold"], "destinations": ["pacs"]}],
        "logging": {"json": request.param},
    }
    with NodeProcess(tmp_path / "node", extra=extra, start_timeout=90) as running:
        yield running


def _all_delivered(node: NodeProcess, expected: int) -> bool:
    with node.database.session() as session:
        states = session.scalars(select(Delivery.state)).all()
    return len(states) == expected and all(state == DeliveryState.delivered for state in states)


def test_invalid_dates_reach_orthanc_and_no_value_the_log(node: NodeProcess, orthanc: Orthanc, tmp_path: Path) -> None:
    studies = []
    for number, (keyword, sent, expected) in enumerate(VARIANTS):
        study_uid, files = _series(tmp_path, number, keyword, sent)
        result = storescu(node.port, files, calling="SCANNER")
        assert result.returncode == 0, result.stderr
        studies.append((study_uid, keyword, expected))
    node.wait_for(lambda: _all_delivered(node, 2 * len(VARIANTS)), timeout=150)

    with node.database.session() as session:
        assert {job.state for job in session.scalars(select(Job))} == {JobState.succeeded}
        stored_texts = [*session.scalars(select(Job.reason)), *session.scalars(select(NodeEvent.message)),
                        *session.scalars(select(AuditEvent.detail)), *session.scalars(select(Series.state_reason))]
    for study_uid, keyword, expected in studies:
        results = _results_in(orthanc, study_uid)
        assert set(results) == {"SEG", "SR"}
        for dataset in results.values():
            assert getattr(dataset, keyword) == expected
            assert str(dataset.PatientName).rstrip("^") == NAME and dataset.PatientID == PATIENT_ID
    log = node.log()
    assert "source header of series" in log  # the notes name the attribute
    for value in SENT_VALUES:
        assert value not in log, f"{value!r} in the node's log"
        assert not any(value in (text or "") for text in stored_texts), f"{value!r} in the index"
