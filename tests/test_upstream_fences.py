"""Every fence around an upstream library's private parts still finds what it overrides in the installed version.

When this fails after an upgrade, the named fence module says what it replaces and why; re-check the upstream
change, then adapt the fence (or drop it where upstream fixed the behaviour) and its version bound.
"""

from __future__ import annotations

import importlib

import pytest

FENCES = [
    "pipelines.upstream.highdicom_seg",
    "pipelines.upstream.highdicom_iod",
    "pipelines.upstream.numpy_hugepages",
    "node.dicom.upstream.pynetdicom_reactor",
    "node.dicom.upstream.pynetdicom_config",
    "node.queue.fs_transport",
    "node.queue.redis_transport",
]


@pytest.mark.parametrize("module", FENCES)
def test_the_fence_finds_what_it_overrides(module: str) -> None:
    fence = importlib.import_module(module)
    assert fence.missing_upstream() == [], f"{module}: upstream no longer has what this fence overrides"


def test_every_fence_is_checked() -> None:
    from tests.test_architecture import UPSTREAM_FENCES

    listed = {name.replace(".", "/") + ".py" for name in FENCES}
    assert listed == UPSTREAM_FENCES
