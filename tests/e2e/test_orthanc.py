"""End to end with a real PACS: Orthanc sends the sample study to pacsnode and gets SEG and SR back.

1. the study is uploaded to Orthanc and Orthanc is told to C-STORE it to the node (as an auto-forward would);
2. the node receives, routes, runs ct-tissue and ct-lungs and returns SEG and SR;
3. Orthanc's REST API shows the SEG and SR series beside the CT, referencing it, the SEG decoding to the masks;
4. results pending while Orthanc is down are delivered once it is back, exactly once; likewise across a node restart.
"""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from sqlalchemy import select

from node.db import Delivery, DeliveryState, Job, JobState
from pipelines.registry import create_pipeline
from pipelines.volume import load_series
from tests.support.sample import PIPELINES, SAMPLE_DIR
from tests.support.node_process import NodeProcess
from tests.support.orthanc import Orthanc

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.34"}


def _sample_files() -> list[Path]:
    return sorted(SAMPLE_DIR.glob("*.dcm"))


def _sample_uids() -> tuple[str, str]:
    header = pydicom.dcmread(_sample_files()[0], stop_before_pixels=True)
    return str(header.StudyInstanceUID), str(header.SeriesInstanceUID)


def _orthanc_forwards_study(orthanc: Orthanc) -> None:
    """Upload the sample study over REST, then make Orthanc push it to the node by C-STORE."""
    ids = orthanc.upload(_sample_files())
    study = orthanc.get(f"/instances/{ids[0]}/study")["ID"]
    orthanc.send_to_modality("node", [study])


def _deliveries(node: NodeProcess) -> list[Delivery]:
    with node.database.session() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.id)).all())


def _all_delivered(node: NodeProcess, expected: int) -> bool:
    rows = _deliveries(node)
    return len(rows) == expected and all(r.state == DeliveryState.delivered for r in rows)


def _result_instances(orthanc: Orthanc, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """The study's non-CT instances in Orthanc, decoded, by modality."""
    found: dict[str, list[pydicom.Dataset]] = {}
    for series in orthanc.series_of_study(study_uid):
        modality = series["MainDicomTags"].get("Modality")
        if modality == "CT":
            continue
        for instance in series["Instances"]:
            found.setdefault(modality, []).append(pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance))))
    return found


def test_orthanc_sends_study_and_gets_seg_and_sr_back(pacs_and_node) -> None:
    orthanc, node = pacs_and_node()
    study_uid, series_uid = _sample_uids()
    _orthanc_forwards_study(orthanc)

    expected = 2 * len(PIPELINES)  # a SEG and an SR per pipeline
    node.wait_for(lambda: _all_delivered(node, expected), timeout=150)
    with node.database.session() as session:
        jobs = session.scalars(select(Job)).all()
        assert sorted(j.pipeline for j in jobs) == sorted(PIPELINES)
        assert all(j.state == JobState.succeeded for j in jobs)
    assert all(r.last_status == "0x0000" and r.attempts == 1 for r in _deliveries(node))

    results = _result_instances(orthanc, study_uid)
    assert len(results.get("SEG", [])) == len(PIPELINES) and len(results.get("SR", [])) == len(PIPELINES)
    for seg in results["SEG"]:
        assert seg.SOPClassUID == SEG_CLASS and seg.StudyInstanceUID == study_uid
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    for sr in results["SR"]:
        assert sr.SOPClassUID in SR_CLASSES and sr.StudyInstanceUID == study_uid
        evidence = {s.SeriesInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                    for s in e.ReferencedSeriesSequence}
        assert series_uid in evidence

    # The SEG in Orthanc decodes to the masks the pipeline computes on the same series.
    volume = load_series(_sample_files())
    source_uids = [str(ds.SOPInstanceUID) for ds in volume.datasets]
    for seg_ds in results["SEG"]:
        seg = hd.seg.Segmentation.from_dataset(seg_ds)
        name = seg.SeriesDescription
        pipeline = next(p for p in PIPELINES if p in name) if any(p in name for p in PIPELINES) else None
        assert pipeline is not None, f"cannot tell the pipeline of SEG {name!r}"
        expected_segments = create_pipeline(pipeline).run(volume).segments
        assert [s.number for s in expected_segments] == list(seg.segment_numbers)
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=source_uids, segment_numbers=[s.number for s in expected_segments],
            assert_missing_frames_are_empty=True,
        )
        for index, segment in enumerate(expected_segments):
            decoded = pixels[..., index].astype(bool)
            assert decoded.shape == segment.mask.shape
            assert np.array_equal(decoded, segment.mask.astype(bool)), f"{pipeline}: segment {segment.label} differs"


def _pending_with_failed_attempts(node: NodeProcess, expected: int) -> bool:
    rows = _deliveries(node)
    return len(rows) == expected and all(r.state == DeliveryState.pending and r.attempts >= 2 for r in rows)


def _assert_delivered_once(orthanc: Orthanc, node: NodeProcess, study_uid: str, ct_count: int) -> None:
    results = _result_instances(orthanc, study_uid)
    assert [len(results.get("SEG", [])), len(results.get("SR", []))] == [1, 1]
    assert len(orthanc.instances()) == ct_count + 2
    before = [(r.id, r.attempts, r.delivered_at) for r in _deliveries(node)]
    import time

    time.sleep(2.5)  # several outbox ticks later, nothing is sent again
    assert [(r.id, r.attempts, r.delivered_at) for r in _deliveries(node)] == before
    assert all(r.state == DeliveryState.delivered and r.last_status == "0x0000" for r in _deliveries(node))


def test_results_wait_for_orthanc_to_come_back(pacs_and_node) -> None:
    orthanc, node = pacs_and_node(pipelines=["ct-tissue"])
    study_uid, _ = _sample_uids()
    _orthanc_forwards_study(orthanc)
    orthanc.stop()  # the PACS goes down before the results are ready
    node.wait_for(lambda: _pending_with_failed_attempts(node, 2), timeout=120)
    assert all(r.last_status == "connection" for r in _deliveries(node))
    orthanc.start()
    node.wait_for(lambda: _all_delivered(node, 2), timeout=30)
    _assert_delivered_once(orthanc, node, study_uid, len(_sample_files()))


def test_results_survive_a_node_restart(pacs_and_node) -> None:
    orthanc, node = pacs_and_node(pipelines=["ct-tissue"])
    study_uid, _ = _sample_uids()
    _orthanc_forwards_study(orthanc)
    orthanc.stop()
    node.wait_for(lambda: _pending_with_failed_attempts(node, 2), timeout=120)
    assert node.stop() == 0  # the node goes down with deliveries in hand
    orthanc.start()
    node.start()
    node.wait_for(lambda: _all_delivered(node, 2), timeout=30)
    _assert_delivered_once(orthanc, node, study_uid, len(_sample_files()))
