"""STOW-RS delivery (dicomweb-client) for destinations of kind ``dicomweb``.

Outcomes use the same StoreOutcome as C-STORE, so one policy judges both: the STOW response's
FailureReason / WarningReason are DICOM status codes; HTTP and network errors map to failure kinds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.errors import InvalidDicomError

from node.dicom.scu import Failure, StoreOutcome
from node.dicom.status import Status

log = logging.getLogger(__name__)

_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


def _http_failure(exc: requests.RequestException, url: str) -> tuple[Failure, str]:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        kind = Failure.rejected_transient if code in _TRANSIENT_HTTP else Failure.rejected_permanent
        return kind, f"STOW-RS to {url} answered HTTP {code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return Failure.timeout, f"STOW-RS to {url} timed out"
    return Failure.connection, f"cannot reach STOW-RS endpoint {url} ({type(exc).__name__})"


def stow(url: str, paths: list[str | Path], timeout: float = 120.0) -> list[StoreOutcome]:
    """Store the files at ``paths`` with one STOW-RS request; one outcome per file, in order."""
    datasets: list[pydicom.Dataset] = []
    outcomes: dict[int, StoreOutcome] = {}
    for index, path in enumerate(paths):
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, InvalidDicomError) as exc:
            outcomes[index] = StoreOutcome(str(path), "", "", failure=Failure.invalid, error=f"cannot read: {exc}")
    readable = [i for i in range(len(paths)) if i not in outcomes]
    if readable:
        try:
            client = DICOMwebClient(url=url, timeout=timeout)
            client.set_http_retry_params(retry=False)  # the outbox owns retries and their backoff
            response = client.store_instances(datasets)
        except requests.RequestException as exc:
            failure, message = _http_failure(exc, url)
            log.warning("%s", message)
            response = None
        failed = {
            str(item.ReferencedSOPInstanceUID): int(item.get("FailureReason", Status.PROCESSING_FAILURE))
            for item in (response.get("FailedSOPSequence", []) if response is not None else [])
        }
        warned = {
            str(item.ReferencedSOPInstanceUID): int(item.get("WarningReason", 0))
            for item in (response.get("ReferencedSOPSequence", []) if response is not None else [])
        }
        for index, ds in zip(readable, datasets):
            uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            if response is None:
                outcomes[index] = StoreOutcome(str(paths[index]), sop_class, uid, failure=failure, error=message)
            else:
                status = failed.get(uid, warned.get(uid, 0))
                outcomes[index] = StoreOutcome(str(paths[index]), sop_class, uid, status=status)
    return [outcomes[i] for i in range(len(paths))]
