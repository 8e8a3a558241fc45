"""A late instance after completion, end to end with Orthanc as the PACS and the default completion settings.

The sample series arrives without its last slice (one DCMTK association), completes from the evidence of
that association, ct-tissue runs and Orthanc gets a SEG and an SR. The last slice then arrives: the series
reopens, completes again, the job runs again and its results replace the first ones in Orthanc, sent once
more; the new SR says what it replaced, and the reopening shows in `pacsnode status`, the dashboard and
/metrics.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from node.db import AuditEvent, Delivery, DeliveryState, Job, JobState, ResultObject, Series
from node.operate import audit
from tests.operate.webcheck import metric, wait_web, web_config
from tests.support.dcmtk import storescu
from tests.support.node_process import PACSNODE, NodeProcess, free_port
from tests.support.orthanc import Orthanc, orthanc_available

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom" / "chest_ct"
TOKEN = "late-instance-token"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def pacs_and_node(tmp_path: Path) -> Iterator[tuple[Orthanc, NodeProcess, str]]:
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make setup`")
    orthanc = Orthanc(tmp_path / "orthanc", overwrite_instances=True)  # a PACS that takes the newer copy
    orthanc.directory.mkdir(parents=True)
    orthanc.start()
    web_port = free_port()
    extra = {
        "node": {"completion": {"quiet_seconds": 60}},  # the defaults: settle 2 s, quiet 60 s
        "queue": {"embedded_worker": True, "reconcile_seconds": 1},
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port}],
        "routes": [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["ct-tissue"], "destinations": ["pacs"]}],
        "web": web_config(web_port, TOKEN),
    }
    node = NodeProcess(tmp_path / "node", extra=extra, start_timeout=90)
    try:
        node.start()
        wait_web(node, f"http://127.0.0.1:{web_port}")
        yield orthanc, node, f"http://127.0.0.1:{web_port}"
    finally:
        node.stop()
        orthanc.stop()


def delivered_run(node: NodeProcess, runs: int) -> Job | None:
    """The job once it has run ``runs`` times and each of its results is delivered."""
    with node.database.session() as session:
        job = session.scalars(select(Job)).first()
        if job is None or job.state != JobState.succeeded or job.run_count != runs:
            return None
        states = session.scalars(select(Delivery.state).join(ResultObject, ResultObject.id == Delivery.result_id)
                                 .where(ResultObject.job_id == job.id)).all()
        return job if len(states) == 2 and all(s == DeliveryState.delivered for s in states) else None


def results_in_orthanc(orthanc: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    found: dict[str, list[pydicom.Dataset]] = {}
    for series in orthanc.series_of_study(study_uid):
        modality = series["MainDicomTags"].get("Modality")
        if modality in ("SEG", "SR"):
            found[modality] = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for i in series["Instances"]]
    return found


def seg_sources(seg: pydicom.Dataset) -> int:
    return sum(len(series.ReferencedInstanceSequence) for series in seg.ReferencedSeriesSequence)


def sr_comments(sr: pydicom.Dataset) -> list[str]:
    return [item.ContentSequence[0].TextValue for item in sr.ContentSequence
            if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]


def test_late_instance_reopens_reruns_and_replaces_the_results_once(pacs_and_node) -> None:
    orthanc, node, web = pacs_and_node
    files = sorted(SAMPLE.glob("CT_*.dcm"))
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    study_uid, series_uid = str(header.StudyInstanceUID), str(header.SeriesInstanceUID)

    assert storescu(node.port, files[:-1], calling="LATE_SENDER").returncode == 0
    first = node.wait_for(lambda: delivered_run(node, 1), timeout=180)
    before = results_in_orthanc(orthanc, study_uid)
    assert [len(before["SEG"]), len(before["SR"])] == [1, 1]
    assert seg_sources(before["SEG"][0]) == len(files) - 1 and sr_comments(before["SR"][0]) == []

    assert storescu(node.port, files[-1:], calling="LATE_SENDER").returncode == 0
    job = node.wait_for(lambda: delivered_run(node, 2), timeout=180)
    assert job.id == first.id and job.source_instances == len(files)
    after = results_in_orthanc(orthanc, study_uid)
    assert [len(after["SEG"]), len(after["SR"])] == [1, 1]  # replaced, not added beside the first ones
    assert after["SEG"][0].SOPInstanceUID == before["SEG"][0].SOPInstanceUID
    assert after["SR"][0].SOPInstanceUID == before["SR"][0].SOPInstanceUID
    assert seg_sources(after["SEG"][0]) == len(files)  # the new SEG covers the whole series
    (comment,) = sr_comments(after["SR"][0])
    assert "replaces the one of run 1 of ct-tissue" in comment
    assert f"from {len(files) - 1} instances of the series); this run read {len(files)} instances" in comment

    with node.database.session() as session:
        series = session.get(Series, series_uid)
        sent = session.scalars(select(AuditEvent).where(AuditEvent.event == audit.RESULTS_DELIVERED)).all()
    assert (series.reopen_count, series.completed_by.value, series.instance_count) == (1, "association", len(files))
    sent_uids = [uid for event in sent for uid in event.sop_instance_uids]
    for uid in (after["SEG"][0].SOPInstanceUID, after["SR"][0].SOPInstanceUID):
        assert sent_uids.count(uid) == 2  # once per run: replaced exactly once

    status = subprocess.run([str(PACSNODE), "status", "--config", str(node.config_path)], capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "1 series reopened (1 reopenings)" in status.stdout and "calling AE LATE_SENDER" in status.stdout
    assert metric(web, "pacsnode_series_reopened_total", calling_ae_title="LATE_SENDER") == 1
    assert metric(web, "pacsnode_series_completed_by", rule="association") == 1
    page = httpx.get(f"{web}/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert page.status_code == 200 and 'id="reopened"' in page.text and "LATE_SENDER: 1" in page.text
    assert "reopened 1&times;" in page.text
