"""DCMTK's storescu and echoscu as a modality runs them against the node (Nagle's algorithm off)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def storescu(port: int, files: list[Path], *, calling: str = "SCANNER", called: str = "PACSNODE",
             extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """Send ``files`` with DCMTK storescu in one association."""
    command = ["storescu", "-aet", calling, "-aec", called, *(extra or []), "127.0.0.1", str(port),
               *map(str, files)]
    return subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, timeout=120)


def echoscu(port: int, *, calling: str = "SCANNER", called: str = "PACSNODE") -> subprocess.CompletedProcess:
    command = ["echoscu", "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
    return subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, timeout=30)


LIMIT_REFUSAL = "Result: Rejected Transient, Source: Service Provider (Presentation Related)\nF: Reason: Local Limit Exceeded"
"""How echoscu reports the refusal of an association beyond node.max_associations (PS3.8 9.3.4: 2, 3, 2).

Refusals are checked with DCMTK rather than pynetdicom: pynetdicom as the requestor can miss an A-ASSOCIATE-RJ
that comes back very quickly (its reader closes the connection before the caller looks) and report an abort."""
