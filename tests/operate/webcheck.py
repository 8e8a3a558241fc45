"""Helpers of the operate tests for the node's web side: Chromium launch settings, /metrics readers and a
wait for `serve`'s web server."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.node_process import NodeProcess
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: F401 (re-exported)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def web_config(port: int, token: str) -> dict:
    """The `web` section for a NodeProcess serving on 127.0.0.1:``port``."""
    return {"enabled": True, "host": "127.0.0.1", "port": port, "token": token}


def wait_web(node: NodeProcess, url: str) -> None:
    """`serve` starts its web server after the receivers answer C-ECHO; wait for it."""

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    node.wait_for(up, timeout=30)


def metrics(url: str) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} for every sample of /metrics, parsed by prometheus_client."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def metric(url: str, name: str, **labels: str) -> float:
    """The one sample ``name`` with ``labels`` (a subset of its labels)."""
    for key, value in metrics(url).get(name, {}).items():
        if all((k, v) in key for k, v in labels.items()):
            return value
    raise AssertionError(f"{name} {labels} not in /metrics")


def log_in(page, url: str, token: str) -> None:  # type: ignore[no-untyped-def]
    """Log a Playwright ``page`` in to the dashboard at ``url`` with ``token``; it lands on the overview."""
    page.goto(f"{url}/login")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{url}/")
