"""Fence: whether numpy asks the kernel for transparent huge pages when it allocates a large array.

numpy does by default (``madvise``). Where the kernel compacts memory to satisfy such a request (THP defrag
``madvise``, a common default), a fresh 300-slice float32 volume loads slower and less evenly with it than
without (README, benchmarks). Worker processes therefore turn it off unless the
configuration (``queue.numpy_hugepages``) keeps it on. numpy offers no public switch: this uses its private
``numpy._core.multiarray._set_madvise_hugepage`` (numpy 2; pyproject bounds numpy below 3) and does nothing
where it is absent; ``missing_upstream()`` says so.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def use_hugepages(enabled: bool) -> bool:
    """Set whether this process's new large numpy arrays ask for huge pages; False if numpy cannot say."""
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None)
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    if setter is None:
        log.debug("this numpy cannot switch its huge page requests; left as they are")
        return False
    setter(enabled)
    return True


def missing_upstream() -> list[str]:
    """What this fence uses that the installed numpy no longer has (empty when all is there)."""
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None)
    return [] if callable(getattr(multiarray, "_set_madvise_hugepage", None)) else [
        "numpy._core.multiarray._set_madvise_hugepage"]
