"""The outbox: rows per (result, destination), claims, the policy on real peers, retries and restarts."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from node.db import DeliveryState
from node.deliver.attempt import deliver
from node.deliver.outbox import retry_failed, schedule_deliveries
from node.ports import free_port
from tests.support.peers import StoreSCP, result_copy
from tests.support.waiting import wait_for

PRIVATE_CLASS = "1.2.826.0.1.3680043.8.498.4242"


def _dest(name: str, port: int, ae: str = "STORESCP", outputs: list[str] | None = None) -> dict:
    return {"name": name, "ae_title": ae, "host": "127.0.0.1", "port": port, "outputs": outputs or ["seg", "sr"]}


def _results(tmp_path: Path, ct_files: list[str]) -> dict[str, Path]:
    return {"seg": result_copy(ct_files[0], tmp_path / "r"), "sr": result_copy(ct_files[0], tmp_path / "r")}


def test_one_row_per_result_and_destination_and_rerun_resets(make_node, tmp_path: Path, ct_files: list[str]) -> None:
    node = make_node(destinations=[_dest("pacs", 104), _dest("archive", 105, outputs=["sr"])],
                     senders=[{"ae_title": "MODALITY", "port": 4006}],
                     routes=[{"name": "r", "reply_to_sender": True, "destinations": ["pacs", "archive"]}])
    job = node.add_job(_results(tmp_path, ct_files), ["pacs", "archive"], routes=["r"], calling_host="127.0.0.9")
    first = schedule_deliveries(node.settings, node.database, job)
    rows = node.deliveries()
    assert sorted(r.destination for r in rows) == ["archive", "pacs", "pacs", "sender:MODALITY", "sender:MODALITY"]
    assert all(r.state == DeliveryState.pending for r in rows)
    with node.database.session() as session:  # a row delivered earlier goes back to pending on a re-run
        from node.db import Delivery

        session.get(Delivery, first[0]).state = DeliveryState.delivered
    again = schedule_deliveries(node.settings, node.database, job)
    assert sorted(again) == sorted(first)
    assert all(r.state == DeliveryState.pending and r.attempts == 0 for r in node.deliveries())


def test_reply_to_unknown_sender_is_recorded_not_crashed(make_node, tmp_path: Path, ct_files: list[str]) -> None:
    from sqlalchemy import select

    from node.db import NodeEvent

    node = make_node(destinations=[], routes=[{"name": "r", "reply_to_sender": True}])
    job = node.add_job(_results(tmp_path, ct_files), [], routes=["r"], calling="STRANGER")
    assert schedule_deliveries(node.settings, node.database, job) == []
    with node.database.session() as session:
        messages = session.scalars(select(NodeEvent.message)).all()
    assert any("STRANGER" in m and "senders" in m for m in messages)


def test_seg_and_sr_go_on_one_association(make_node, storescp: StoreSCP, tmp_path: Path, ct_files: list[str]) -> None:
    node = make_node(destinations=[_dest("pacs", storescp.port)])
    job = node.add_job(_results(tmp_path, ct_files), ["pacs"])
    ids = schedule_deliveries(node.settings, node.database, job)
    counts = deliver(node.settings, node.database, ids[0])
    assert counts == {"delivered": 2}
    rows = node.deliveries()
    assert [(r.state, r.last_status, r.attempts) for r in rows] == [(DeliveryState.delivered, "0x0000", 1)] * 2
    assert len(storescp.received()) == 2
    assert deliver(node.settings, node.database, ids[1]) == {}  # a duplicate message sends nothing


def test_sop_class_not_accepted_fails_at_once(make_node, storescp: StoreSCP, tmp_path: Path, ct_files: list[str]) -> None:
    node = make_node(destinations=[_dest("pacs", storescp.port)])
    job = node.add_job({"seg": result_copy(ct_files[0], tmp_path / "r", sop_class=PRIVATE_CLASS)}, ["pacs"])
    [delivery_id] = schedule_deliveries(node.settings, node.database, job)
    assert deliver(node.settings, node.database, delivery_id) == {"failed": 1}
    [row] = node.deliveries()
    assert row.state == DeliveryState.failed and row.last_status == "not-accepted"
    assert PRIVATE_CLASS in row.error and row.next_attempt_at is None
    assert retry_failed(node.settings, node.database) == [delivery_id]
    assert node.deliveries()[0].state == DeliveryState.pending


def test_refusal_status_fails_at_once_with_the_status(make_node, tmp_path: Path, ct_files: list[str]) -> None:
    ae = AE(ae_title="PICKY")
    ae.add_supported_context(CTImageStorage, pydicom.dcmread(ct_files[0]).file_meta.TransferSyntaxUID)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda e: 0xA900)])
    try:
        node = make_node(destinations=[_dest("pacs", port, ae="PICKY")])
        job = node.add_job({"seg": result_copy(ct_files[0], tmp_path / "r")}, ["pacs"])
        [delivery_id] = schedule_deliveries(node.settings, node.database, job)
        assert deliver(node.settings, node.database, delivery_id) == {"failed": 1}
    finally:
        server.shutdown()
    [row] = node.deliveries()
    assert (row.state, row.last_status, row.attempts) == (DeliveryState.failed, "0xA900", 1)


def test_destination_down_backs_off_then_delivers(make_node, tmp_path: Path, ct_files: list[str]) -> None:
    """No peer: attempts are spaced by doubling delays; once storescp is up, the worker delivers, once."""
    port = free_port()
    node = make_node(destinations=[_dest("pacs", port)])
    job = node.add_job(_results(tmp_path, ct_files), ["pacs"])
    ids = schedule_deliveries(node.settings, node.database, job)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert deliver(node.settings, node.database, ids[0]) == {"retry": 2}
    row = node.deliveries()[0]
    assert row.state == DeliveryState.pending and row.last_status == "connection" and row.attempts == 1
    assert 0.3 <= (row.next_attempt_at - before).total_seconds() <= 1.5  # retry_initial_seconds: 0.5
    node.start_worker("delivery", "solo", ready=False)
    node.start_loops("outbox")
    wait_for(lambda: node.deliveries()[0].attempts >= 3, 30, "two more attempts while the peer is down")
    assert all(r.state != DeliveryState.delivered for r in node.deliveries())
    storescp_dir = tmp_path / "late"
    storescp_dir.mkdir()
    peer = StoreSCP("STORESCP", port, storescp_dir)
    peer.start()
    try:
        wait_for(lambda: all(r.state == DeliveryState.delivered for r in node.deliveries()), 30, "delivery after the peer is up")
        time.sleep(1.5)  # later ticks must not send again
        received = [pydicom.dcmread(p).SOPInstanceUID for p in peer.received()]
    finally:
        peer.stop()
    assert sorted(received) == sorted(r.sop_instance_uid for r in _result_rows(node))
    assert all(r.last_status == "0x0000" for r in node.deliveries())


def _result_rows(node) -> list:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from node.db import ResultObject

    with node.database.session() as session:
        return list(session.scalars(select(ResultObject)).all())


def test_worker_killed_mid_delivery_resumes_and_delivers_once(make_node, tmp_path: Path, ct_files: list[str]) -> None:
    """A slow PACS holds the first C-STORE; the worker dies; a new worker resends; the row ends delivered once."""
    stored: list[str] = []
    first_arrived = threading.Event()

    def on_store(event: evt.Event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        if not first_arrived.is_set():
            first_arrived.set()
            time.sleep(3)  # the worker is killed meanwhile
        stored.append(uid)
        return 0x0000

    ae = AE(ae_title="SLOW")
    ae.add_supported_context(CTImageStorage, pydicom.dcmread(ct_files[0]).file_meta.TransferSyntaxUID)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        node = make_node(destinations=[_dest("pacs", port, ae="SLOW", outputs=["seg"])])
        job = node.add_job({"seg": result_copy(ct_files[0], tmp_path / "r")}, ["pacs"])
        node.start_worker("delivery", "solo", ready=False)
        schedule_deliveries(node.settings, node.database, job)
        assert first_arrived.wait(30), "the worker never sent the object"
        assert node.deliveries()[0].state == DeliveryState.sending
        node.kill_workers()
        node.start_worker("delivery", "solo", ready=False)
        node.start_loops("outbox")
        wait_for(lambda: node.deliveries()[0].state == DeliveryState.delivered, 30, "delivery after the restart")
    finally:
        server.shutdown()
    [row] = node.deliveries()
    assert row.attempts == 2 and row.last_status == "0x0000"
    assert _result_rows(node)[0].sop_instance_uid in stored


def test_reply_to_sender_goes_to_the_calling_aes_address(make_node, storescp: StoreSCP, tmp_path: Path,
                                                          ct_files: list[str]) -> None:
    """The series came from MODALITY at 127.0.0.1; its declared port gets the results, no destination needed."""
    node = make_node(destinations=[], senders=[{"ae_title": "MODALITY", "port": storescp.port}],
                     routes=[{"name": "back", "reply_to_sender": True}])
    job = node.add_job(_results(tmp_path, ct_files), [], routes=["back"], calling="MODALITY", calling_host="127.0.0.1")
    ids = schedule_deliveries(node.settings, node.database, job)
    assert deliver(node.settings, node.database, ids[0]) == {"delivered": 2}
    assert {r.destination for r in node.deliveries()} == {"sender:MODALITY"}
    assert len(storescp.received()) == 2


def test_rows_sending_under_a_dead_worker_of_another_host_go_back_to_pending(make_node, tmp_path: Path,
                                                                              ct_files: list[str]) -> None:
    """Judged by beats alone: the silent worker's row is resumed, a beating worker's row is left to it."""
    from sqlalchemy import update

    from node.db import Delivery, WorkerProcess, utcnow
    from node.deliver.outbox import resume_stalled
    from node.queue.workers import judge_silent

    node = make_node(destinations=[_dest("pacs", 104), _dest("archive", 105)])
    job = node.add_job(_results(tmp_path, ct_files), ["pacs", "archive"])
    rows = schedule_deliveries(node.settings, node.database, job)
    silent_since = utcnow() - dt.timedelta(seconds=node.settings.queue.worker_dead_after_seconds + 1)
    holders = {"gpu-host-7:4242:0badc0de": silent_since, "gpu-host-8:4242:600dc0de": utcnow()}
    with node.database.session() as session:
        for (identity, seen), delivery_id in zip(holders.items(), rows):
            session.add(WorkerProcess(id=identity, host=identity.partition(":")[0], pid=4242, queues="delivery",
                                      started_at=seen, seen_at=seen))
            session.execute(update(Delivery).where(Delivery.id == delivery_id).values(
                state=DeliveryState.sending, worker=f"{identity}:12345678", sending_since=utcnow()))

    assert resume_stalled(node.settings, node.database) == []  # not judged dead yet: its beats count, not its pid
    assert judge_silent(node.settings, node.database) == ["gpu-host-7:4242:0badc0de"]
    assert resume_stalled(node.settings, node.database) == [rows[0]]
    states = {row.id: row.state for row in node.deliveries()}
    assert states[rows[0]] == DeliveryState.pending and states[rows[1]] == DeliveryState.sending
