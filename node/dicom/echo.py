"""C-ECHO: verify that a DICOM peer answers (the CLI, the demo and the local PACS runner use it)."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.dicom.upstream import pynetdicom_reactor


@dataclass(frozen=True)
class EchoResult:
    """What a C-ECHO attempt gave: ``ok`` when the association opened and the status was Success."""

    ok: bool
    problem: str | None = None  # why not, in words


def c_echo(host: str, port: int, called_ae_title: str, calling_ae_title: str = "PACSNODE",
           timeout: float = 2.0) -> EchoResult:
    """Open an association to ``called_ae_title`` at ``host:port``, send C-ECHO and release."""
    ae = AE(ae_title=calling_ae_title)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_ae_title)
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "unreachable"
        return EchoResult(False, f"association {state}")
    status = pynetdicom_reactor.install(assoc).send_c_echo()
    assoc.release()
    code = getattr(status, "Status", None)
    if code != 0x0000:
        return EchoResult(False, f"status {code}")
    return EchoResult(True)
