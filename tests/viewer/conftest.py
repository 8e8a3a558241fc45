"""Fixtures for the viewer tests: one Orthanc with DICOMweb, OHIF served same-origin and one headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ohif import OrthancWeb, ViewerPage, chromium, ohif_dist, ohif_server, orthanc_with_dicomweb

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "viewer"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots are kept here for a person to look at (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def orthanc_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancWeb]:
    with orthanc_with_dicomweb(tmp_path_factory.mktemp("orthanc-web")) as server:
        yield server


@pytest.fixture(scope="module")
def viewer_url(orthanc_web: OrthancWeb) -> Iterator[str]:
    with ohif_server(ohif_dist(), orthanc_web.http_port) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as running:
        yield running


@pytest.fixture
def viewer(browser: object, viewer_url: str) -> Iterator[ViewerPage]:
    page = ViewerPage(browser, viewer_url)
    yield page
    page.close()
