"""Output profiles per destination, and the fallback sent once when a destination refuses SEG at association;
the SEG offered again once the refusal is older than delivery.refusal_retry_hours."""

from __future__ import annotations

import datetime as dt

import pydicom
from sqlalchemy import select

from node.db import Delivery, DeliveryState, DestinationRefusal, NodeEvent, utcnow
from node.deliver.attempt import deliver
from node.deliver.outputs import SEG_SOP_CLASSES, send_fallback_instead
from node.deliver.outbox import schedule_deliveries
from tests.support.peers import ScpPeer as Peer, destination

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _pending(node) -> list[int]:  # type: ignore[no-untyped-def]
    return [r.id for r in node.deliveries() if r.state == DeliveryState.pending]


def _uids(files: dict, prefix: str) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for k, p in files.items()
            if k.startswith(prefix)}


def test_outputs_choose_what_each_destination_receives(make_node, full_peer: Peer, result_files) -> None:  # type: ignore[no-untyped-def]
    node = make_node(destinations=[destination("viewer", full_peer, ["seg"]), destination("legacy", full_peer, ["fallback"])])
    files = result_files()
    job = node.add_job(files, ["viewer", "legacy"])
    schedule_deliveries(node.settings, node.database, job)
    by_destination: dict[str, int] = {}
    for row in node.deliveries():
        by_destination[row.destination] = by_destination.get(row.destination, 0) + 1
    fallback_count = sum(1 for kind in files if kind.startswith("fallback"))
    assert by_destination == {"viewer": 1, "legacy": fallback_count}
    for delivery_id in _pending(node):
        deliver(node.settings, node.database, delivery_id)
    assert {uid for _, uid in full_peer.received} == _uids(files, "seg") | _uids(files, "fallback")


def test_refused_seg_is_recorded_and_the_fallback_sent_once_instead(make_node, seg_less_peer: Peer, result_files) -> None:  # type: ignore[no-untyped-def]
    node = make_node(destinations=[destination("legacy", seg_less_peer, ["seg", "sr"])])
    files = result_files()
    job = node.add_job(files, ["legacy"])
    [seg_delivery] = schedule_deliveries(node.settings, node.database, job)

    assert deliver(node.settings, node.database, seg_delivery) == {"replaced": 1}
    seg_row = next(r for r in node.deliveries() if r.id == seg_delivery)
    assert seg_row.state == DeliveryState.replaced and "fallback" in seg_row.error
    pending = _pending(node)
    assert len(pending) == len(_uids(files, "fallback")) >= 1
    for delivery_id in pending:
        deliver(node.settings, node.database, delivery_id)

    assert all(sop_class == SC_CLASS for sop_class, _ in seg_less_peer.received)
    assert {uid for _, uid in seg_less_peer.received} == _uids(files, "fallback")
    with node.database.session() as session:
        refusals = session.scalars(select(DestinationRefusal)).all()
        events = session.scalars(select(NodeEvent).where(NodeEvent.kind == "seg_refused")).all()
    assert [(r.destination, r.sop_class_uid in SEG_SOP_CLASSES) for r in refusals] == [("legacy", True)]
    assert len(events) == 1 and events[0].level == "warning" and "legacy refused the SEG" in events[0].message
    # Once: asking again creates nothing, so nothing is sent twice.
    assert send_fallback_instead(node.database, "legacy", [seg_delivery]) == []
    assert len(seg_less_peer.received) == len(_uids(files, "fallback"))


def test_a_destination_known_to_refuse_seg_gets_the_fallback_straight_away(make_node, seg_less_peer: Peer, result_files) -> None:  # type: ignore[no-untyped-def]
    node = make_node(destinations=[destination("legacy", seg_less_peer, ["seg"])])
    first = node.add_job(result_files(), ["legacy"])
    [seg_delivery] = schedule_deliveries(node.settings, node.database, first)
    deliver(node.settings, node.database, seg_delivery)
    for delivery_id in _pending(node):
        deliver(node.settings, node.database, delivery_id)
    seg_less_peer.received.clear()

    files = result_files()
    second = node.add_job(files, ["legacy"])
    ids = schedule_deliveries(node.settings, node.database, second)
    with node.database.session() as session:
        rows = session.scalars(select(Delivery).where(Delivery.id.in_(ids))).all()
        replaced = session.scalars(
            select(Delivery).where(Delivery.state == DeliveryState.replaced, Delivery.id.not_in([seg_delivery]))
        ).all()
    assert len(rows) == len(_uids(files, "fallback")), "only the fallback is scheduled"
    assert len(replaced) == 1, "the SEG is recorded as replaced without an attempt"
    assert replaced[0].attempts == 0
    for delivery_id in ids:
        deliver(node.settings, node.database, delivery_id)
    assert {uid for _, uid in seg_less_peer.received} == _uids(files, "fallback")


def test_status_says_the_seg_was_replaced_by_the_fallback(make_node, seg_less_peer: Peer, result_files) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys
    from pathlib import Path

    node = make_node(destinations=[destination("legacy", seg_less_peer, ["seg"])])
    job = node.add_job(result_files(), ["legacy"])
    [seg_delivery] = schedule_deliveries(node.settings, node.database, job)
    deliver(node.settings, node.database, seg_delivery)
    status = subprocess.run(
        [str(Path(sys.executable).parent / "pacsnode"), "status", "--config", str(node.config_path)],
        capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )
    assert status.returncode == 0, status.stderr
    assert "replaced" in status.stdout
    assert "legacy refused the SEG at association; sent 1 fallback key image(s) instead" in status.stdout

    def pacsnode(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "pacsnode"), *args, "--config", str(node.config_path)],
                              capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"})

    listed = pacsnode("refusals")
    assert listed.returncode == 0 and "legacy" in listed.stdout and "1.2.840.10008.5.1.4.1.1.66" in listed.stdout
    assert "forgot 1 refusal(s) of legacy" in pacsnode("refusals", "--clear", "legacy").stdout
    assert "legacy" not in pacsnode("refusals").stdout


def test_a_refusal_older_than_the_retry_period_is_tried_again_and_forgotten_when_accepted(  # type: ignore[no-untyped-def]
        make_node, full_peer: Peer, seg_less_peer: Peer, result_files) -> None:
    node = make_node(destinations=[destination("upgraded", full_peer, ["seg"]),
                                   destination("legacy", seg_less_peer, ["seg"]), destination("recent", full_peer, ["seg"])])
    assert node.settings.delivery.refusal_retry_hours == 24  # the default
    seg_class = str(pydicom.dcmread(result_files()["seg"], stop_before_pixels=True).SOPClassUID)
    now = utcnow()
    long_ago, lately = now - dt.timedelta(hours=25), now - dt.timedelta(hours=23)
    with node.database.session() as session:
        for name, at in (("upgraded", long_ago), ("legacy", long_ago), ("recent", lately)):
            session.add(DestinationRefusal(destination=name, sop_class_uid=seg_class, detail="refused",
                                           first_refused_at=at, last_refused_at=at))
    files = result_files()
    job = node.add_job(files, ["upgraded", "legacy", "recent"])
    for delivery_id in schedule_deliveries(node.settings, node.database, job):
        deliver(node.settings, node.database, delivery_id)
    for delivery_id in _pending(node):  # the fallback of the SEG refused again
        deliver(node.settings, node.database, delivery_id)

    states = {(row.destination, row.state) for row in node.deliveries()}
    seg = _uids(files, "seg")
    # Refused 25 h ago: offered the SEG with its own SOP class again. The upgraded peer took it...
    assert ("upgraded", DeliveryState.delivered) in states
    assert {(seg_class, uid) for uid in seg} <= set(full_peer.received)
    # ...the legacy one refused it again and got the fallback; refused 23 h ago: the fallback straight away.
    assert ("legacy", DeliveryState.replaced) in states and ("recent", DeliveryState.replaced) in states
    assert {uid for _, uid in seg_less_peer.received} == _uids(files, "fallback")
    with node.database.session() as session:
        refusals = {r.destination: r.last_refused_at for r in session.scalars(select(DestinationRefusal))}
    assert set(refusals) == {"legacy", "recent"}  # the accepted one is forgotten
    assert refusals["legacy"] >= now and refusals["recent"] == lately  # the retry wait starts again
