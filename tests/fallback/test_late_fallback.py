"""Jobs build fallback images only for destinations that need them; a first SEG refusal builds them then.

The images built late are the ones the job would have written: same UIDs, same pixels.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipelines.settings import ResultOptions
from node.db import DeliveryState, DestinationRefusal, Instance, Job, JobState, ResultObject, Series, SeriesState, Study
from node.deliver.attempt import deliver
from node.deliver.outputs import fallback_needed
from node.deliver.outbox import schedule_deliveries
from pipelines.results import write_results
from pipelines.results.uids import job_key
from pipelines.volume import load_series
from tests.support.peers import ScpPeer as Peer, destination
from tests.support.results import make_result, write_ct_series

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
PIPELINE = "test-shapes"


def _stored_job(node, tmp_path: Path, destinations: list[str], *, fallback: bool, overlapping: bool = False):  # type: ignore[no-untyped-def]
    """A finished job on a stored series, its results written as the worker writes them; (job ID, written, reference).

    ``reference``: the same job's results written with the fallback images, elsewhere.
    """
    paths = write_ct_series(tmp_path / "series", orientation="oblique", shuffle=True)
    volume = load_series(paths)
    series_uid = str(volume.datasets[0].SeriesInstanceUID)
    result, key = make_result(volume, overlapping=overlapping), job_key(series_uid, PIPELINE)
    written = write_results(volume, result, ResultOptions(), key, tmp_path / "results", fallback=fallback)
    reference = write_results(volume, result, ResultOptions(), key, tmp_path / "reference", fallback=True)
    with node.database.session() as session:
        study_uid = str(volume.datasets[0].StudyInstanceUID)
        session.add(Study(study_uid=study_uid))
        session.flush()
        session.add(Series(series_uid=series_uid, study_uid=study_uid, modality="CT", state=SeriesState.routed,
                           calling_ae_title="MODALITY", calling_host="127.0.0.1"))
        session.flush()
        for path in paths:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            session.add(Instance(sop_instance_uid=str(header.SOPInstanceUID), series_uid=series_uid,
                                 sop_class_uid=str(header.SOPClassUID), transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
                                 path=str(path), size_bytes=path.stat().st_size))
        job = Job(series_uid=series_uid, pipeline=PIPELINE, destinations=destinations, state=JobState.succeeded)
        session.add(job)
        session.flush()
        for item in written:
            session.add(ResultObject(job_id=job.id, kind=item.kind, sop_class_uid=item.sop_class_uid,
                                     sop_instance_uid=item.sop_instance_uid, series_uid=item.series_uid,
                                     study_uid=item.study_uid, path=str(item.path), size_bytes=item.size_bytes))
        return job.id, written, reference


def _deliver_pending(node) -> None:  # type: ignore[no-untyped-def]
    for row in node.deliveries():
        if row.state == DeliveryState.pending:
            deliver(node.settings, node.database, row.id)


def test_only_destinations_that_want_or_refuse_seg_make_a_job_build_its_fallback(make_node, full_peer: Peer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    node = make_node(destinations=[destination("viewer", full_peer, ["seg", "sr"]), destination("legacy", full_peer, ["fallback"])])
    plain, *_ = _stored_job(node, tmp_path / "a", ["viewer"], fallback=False)
    wanting, *_ = _stored_job(node, tmp_path / "b", ["viewer", "legacy"], fallback=False)

    assert fallback_needed(node.settings, node.database, plain) is False
    assert fallback_needed(node.settings, node.database, wanting) is True
    with node.database.session() as session:
        session.add(DestinationRefusal(destination="viewer", sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4", detail="refused"))
    assert fallback_needed(node.settings, node.database, plain) is True


@pytest.mark.parametrize("overlapping", [False, True], ids=["separate", "overlapping"])
def test_a_first_refusal_builds_the_fallback_the_job_would_have_written(make_node, seg_less_peer: Peer, tmp_path, overlapping) -> None:  # type: ignore[no-untyped-def]
    node = make_node(destinations=[destination("legacy", seg_less_peer, ["seg", "sr"])])
    job, written, expected = _stored_job(node, tmp_path / "job", ["legacy"], fallback=False, overlapping=overlapping)
    assert not any(w.kind.startswith("fallback") for w in written)
    expected_fallback = {w.kind: w for w in expected if w.kind.startswith("fallback")}

    schedule_deliveries(node.settings, node.database, job)
    _deliver_pending(node)  # the SEG is refused at association, the SR goes
    _deliver_pending(node)  # the fallback built on the refusal

    with node.database.session() as session:
        rows = {r.kind: r for r in session.query(ResultObject).filter(ResultObject.job_id == job)}
    built = {kind: row for kind, row in rows.items() if kind.startswith("fallback")}
    assert sorted(built) == sorted(expected_fallback) and built
    for kind, row in built.items():
        late, reference = pydicom.dcmread(row.path), pydicom.dcmread(expected_fallback[kind].path)
        assert late.SOPInstanceUID == reference.SOPInstanceUID and late.SeriesInstanceUID == reference.SeriesInstanceUID
        assert late.PixelData == reference.PixelData
    received = {uid for sop_class, uid in seg_less_peer.received if sop_class == SC_CLASS}
    assert received == {row.sop_instance_uid for row in built.values()}
    states = {r.destination + ":" + r.state.value for r in node.deliveries()}
    assert "legacy:replaced" in states and "legacy:failed" not in states


def test_a_refusal_after_the_series_was_removed_says_why_no_fallback_was_sent(make_node, seg_less_peer: Peer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from node.db import NodeEvent

    node = make_node(destinations=[destination("legacy", seg_less_peer, ["seg", "sr"])])
    job, _, _ = _stored_job(node, tmp_path / "job", ["legacy"], fallback=False)
    for path in (tmp_path / "job" / "series").glob("*.dcm"):
        path.unlink()

    schedule_deliveries(node.settings, node.database, job)
    _deliver_pending(node)

    with node.database.session() as session:
        events = [e.message for e in session.query(NodeEvent).filter(NodeEvent.kind == "seg_refused")]
        kinds = [r.kind for r in session.query(ResultObject).filter(ResultObject.job_id == job)]
    assert any("cannot build the fallback images" in message for message in events)
    assert not any(kind.startswith("fallback") for kind in kinds)
    assert not any(sop_class == SC_CLASS for sop_class, _ in seg_less_peer.received)
