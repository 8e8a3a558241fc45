"""Who may associate: calling-AE allowlist, host binding, the association limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.support.dcmtk import LIMIT_REFUSAL, echoscu
from tests.support.node_process import NodeProcess, echo


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    extra = {"node": {"allowed_calling_ae_titles": ["SCANNER", "BOUND", "ECHOSCU"], "max_associations": 2,
                      "calling_ae_hosts": {"BOUND": "10.9.8.7"}}}
    with NodeProcess(tmp_path_factory.mktemp("guarded"), extra=extra) as running:
        yield running


def test_allowed_calling_ae_is_accepted(guarded: NodeProcess) -> None:
    assert echoscu(guarded.port, calling="SCANNER").returncode == 0


def test_unknown_calling_ae_is_rejected(guarded: NodeProcess) -> None:
    result = echoscu(guarded.port, calling="INTRUDER")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr
    assert "rejected association from INTRUDER@127.0.0.1" in guarded.log()


def test_calling_ae_bound_to_another_host_is_rejected(guarded: NodeProcess) -> None:
    result = echoscu(guarded.port, calling="BOUND")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr
    assert "bound to 10.9.8.7" in guarded.log()


def open_association(port: int, calling: str = "SCANNER"):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="PACSNODE")


def test_associations_beyond_the_limit_are_rejected_then_accepted_again(guarded: NodeProcess) -> None:
    held = [open_association(guarded.port) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        assert LIMIT_REFUSAL in echoscu(guarded.port).stderr  # transient, service provider, local limit
    finally:
        for assoc in held:
            assoc.release()
    guarded.wait_for(lambda: echo(guarded.port), timeout=10)
    assert "node.max_associations" in guarded.log()
