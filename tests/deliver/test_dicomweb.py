"""STOW-RS delivery to Orthanc's DICOMweb plugin, and the failure kinds of an unreachable endpoint."""

from __future__ import annotations

from pathlib import Path

from node.deliver.dicomweb import stow
from node.deliver.policy import is_permanent
from node.dicom.scu import Failure
from node.ports import free_port
from tests.support.peers import result_copy
from tests.support.orthanc import running_orthanc


def test_stow_to_orthanc(tmp_path: Path, ct_files: list[str]) -> None:
    files = [result_copy(ct_files[0], tmp_path / "r"), result_copy(ct_files[1], tmp_path / "r")]
    with running_orthanc(tmp_path / "orthanc", dicomweb=True) as orthanc:
        outcomes = stow(orthanc.dicomweb_url, files)
        assert [o.status for o in outcomes] == [0, 0] and all(o.stored for o in outcomes)
        assert len(orthanc.instances()) == 2


def test_stow_endpoint_down_is_retryable(tmp_path: Path, ct_files: list[str]) -> None:
    [outcome] = stow(f"http://127.0.0.1:{free_port()}/dicom-web", [ct_files[0]], timeout=5)
    assert outcome.failure is Failure.connection and not is_permanent(outcome)


def test_stow_http_404_is_permanent(tmp_path: Path, ct_files: list[str]) -> None:
    with running_orthanc(tmp_path / "orthanc") as orthanc:  # no DICOMweb plugin: /dicom-web does not exist
        [outcome] = stow(orthanc.dicomweb_url, [ct_files[0]])
    assert outcome.failure is Failure.rejected_permanent and "404" in outcome.error


def test_outbox_delivers_to_a_dicomweb_destination(make_node, tmp_path: Path, ct_files: list[str]) -> None:
    from node.db import DeliveryState
    from node.deliver.attempt import deliver
    from node.deliver.outbox import schedule_deliveries

    with running_orthanc(tmp_path / "orthanc", dicomweb=True) as orthanc:
        node = make_node(destinations=[{"name": "web", "kind": "dicomweb", "url": orthanc.dicomweb_url}])
        job = node.add_job({"seg": result_copy(ct_files[0], tmp_path / "r"), "sr": result_copy(ct_files[0], tmp_path / "r")},
                           ["web"])
        ids = schedule_deliveries(node.settings, node.database, job)
        assert deliver(node.settings, node.database, ids[0]) == {"delivered": 2}
        assert len(orthanc.instances()) == 2
    assert [(r.state, r.last_status) for r in node.deliveries()] == [(DeliveryState.delivered, "0x0000")] * 2
