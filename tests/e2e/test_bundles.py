"""Model Zoo layouts through a real node: storescu sends, the node runs the bundles, Orthanc gets SEG and SR.

A chest CT goes through a wholeBody-style bundle (labels and their codes from its metadata alone); a brain MR
study of four series goes through a BraTS-style bundle as one study-level job with four input channels.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from node.db import Delivery, DeliveryState, Job, JobState
from tests.support.sample import SAMPLE_DIR
from tests.pipelines import zoo, zoo_networks
from tests.support import dcmtk
from tests.support.mr_study import INPUTS, mr_study, write_study
from tests.support.node_process import NodeProcess, free_port
from tests.support.orthanc import Orthanc, orthanc_available
from tests.support.results import dciodvfy_errors

def storescu(port: int, files: list[Path]) -> None:
    result = dcmtk.storescu(port, files)
    assert result.returncode == 0, result.stderr


def node_config(tmp_path: Path, orthanc: Orthanc) -> dict:
    return {
        "node": {"completion": {"quiet_seconds": 1}, "study_quiet_seconds": 30},
        "queue": {"embedded_worker": True, "reconcile_seconds": 1, "requeue_after_seconds": 5},
        "destinations": [{"name": "pacs", "ae_title": orthanc.ae_title, "host": "127.0.0.1",
                          "port": orthanc.dicom_port, "outputs": ["seg", "sr"]}],
        "pipelines": [
            {"name": "wholebody", "bundle_dir": str(zoo.wholebody(tmp_path / "wholeBody_ct_segmentation"))},
            {"name": "brats", "bundle_dir": str(zoo_networks.brats(tmp_path / "brats_mri_segmentation")),
             "modalities": ["MR"], "labels": zoo_networks.BRATS_LABELS},
        ],
        "routes": [
            {"name": "chest-ct", "match": {"Modality": "CT"}, "pipelines": ["wholebody"], "destinations": ["pacs"]},
            {"name": "brain-tumour", "match": {"Modality": "MR"}, "inputs": INPUTS, "reference": "t1",
             "pipelines": ["brats"], "destinations": ["pacs"]},
        ],
    }


def delivered(node: NodeProcess, expected: int) -> bool:
    with node.database.session() as session:
        rows = session.scalars(select(Delivery)).all()
    return len(rows) == expected and all(row.state == DeliveryState.delivered for row in rows)


def segs_in(orthanc: Orthanc, study_uid: str) -> list[pydicom.Dataset]:
    found = []
    for series in orthanc.series_of_study(study_uid):
        if series["MainDicomTags"].get("Modality") == "SEG":
            found += [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for i in series["Instances"]]
    return found


def test_zoo_bundles_run_in_the_node_from_storescu_to_orthanc(tmp_path):
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make setup`")
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"node": ("PACSNODE", "127.0.0.1", node_port)})
    orthanc.directory.mkdir(parents=True, exist_ok=True)
    orthanc.start()
    node = NodeProcess(tmp_path / "node", port=node_port, extra=node_config(tmp_path, orthanc), start_timeout=90)
    try:
        node.start()
        study = mr_study()
        mr_files = write_study(study, tmp_path / "mr")
        storescu(node_port, [path for paths in mr_files.values() for path in paths])
        ct_files = sorted(SAMPLE_DIR.glob("*.dcm"))
        storescu(node_port, ct_files)
        node.wait_for(lambda: delivered(node, 4), timeout=240)  # SEG and SR of each job

        with node.database.session() as session:
            jobs = {job.pipeline: job for job in session.scalars(select(Job))}
        assert {name: job.state for name, job in jobs.items()} == {"wholebody": JobState.succeeded,
                                                                   "brats": JobState.succeeded}
        assert list(jobs["brats"].inputs["series"]) == ["t1", "t1c", "t2", "flair"]

        [mr_seg] = segs_in(orthanc, study["T1"][0].StudyInstanceUID)
        assert {item.SeriesInstanceUID for item in mr_seg.ReferencedSeriesSequence} == \
            {datasets[0].SeriesInstanceUID for datasets in study.values()}
        ct_study = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID
        [ct_seg] = segs_in(orthanc, ct_study)
        kinds = {item.SegmentLabel: item.SegmentedPropertyTypeCodeSequence[0] for item in ct_seg.SegmentSequence}
        assert kinds["Kidney right"].CodeValue == "64033007"
        assert kinds["Kidney right"].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Right"
        for path in (node.storage_dir / "results").rglob("*.dcm"):
            assert dciodvfy_errors(path) == [], path
    finally:
        node.stop()
        orthanc.stop()
