"""Fixtures of the operate stage: the index of tests/support/node_state.py and the node's web server on an
ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.web.server import WebServer, start_web
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.node_state import NodeState, build_state


@pytest.fixture(scope="module")
def node_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeState]:
    state = build_state(tmp_path_factory.mktemp("operate") / "storage", refresh_seconds=1)
    yield state
    state.database.dispose()


@pytest.fixture(scope="module")
def web(node_state: NodeState) -> Iterator[WebServer]:
    server = start_web(node_state.settings, node_state.database)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, for the dashboard's pages."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
