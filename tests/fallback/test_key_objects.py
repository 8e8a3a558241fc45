"""The Key Object Selection goes only to destinations whose outputs list ``kos``, and only they make a job write it."""

from __future__ import annotations

from pathlib import Path

from node.deliver.attempt import deliver
from node.deliver.outputs import KEY_OBJECTS, wanted_outputs
from node.deliver.outbox import schedule_deliveries
from pipelines.results import write_results
from pipelines.settings import ResultOptions
from pipelines.volume import load_datasets
from tests.support.peers import ScpPeer as Peer, destination
from tests.viewer.findings import findings_result
from tests.viewer.phantom import make_ct

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


def _job_files(folder: Path) -> dict[str, Path]:
    volume = load_datasets(make_ct().datasets)
    written = write_results(volume, findings_result(volume), ResultOptions(fallback_key_slices=0), str(folder),
                            folder, key_objects=True)
    return {item.kind: item.path for item in written}


def test_kos_goes_only_to_the_destinations_that_list_it(make_node, full_peer: Peer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = make_node(destinations=[destination("viewer", full_peer, ["seg", "sr"]), destination("keys", full_peer, ["kos"])])
    files = _job_files(tmp_path / "a")
    assert set(files) == {"seg", "sr", "kos"}
    with_keys = node.add_job(files, ["viewer", "keys"])
    plain = node.add_job(_job_files(tmp_path / "b"), ["viewer"])

    assert KEY_OBJECTS not in wanted_outputs(node.settings, node.database, plain)
    assert KEY_OBJECTS in wanted_outputs(node.settings, node.database, with_keys)
    schedule_deliveries(node.settings, node.database, with_keys)
    for row in node.deliveries():
        deliver(node.settings, node.database, row.id)
    sent = {(row.destination, row.result_id) for row in node.deliveries()}
    assert len([1 for name, _ in sent if name == "keys"]) == 1
    assert [cls for cls, _ in full_peer.received].count(KOS_CLASS) == 1
    assert {row.state.value for row in node.deliveries()} == {"delivered"}
