"""Runs the web application in a background thread of `pacsnode serve` (uvicorn, one worker)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import uvicorn
from prometheus_client.registry import Collector

from node.config import Settings
from node.db import Database
from node.web.app import create_app
from node.web.health import ReadinessCheck

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0


class WebServer:
    """A started web server; ``port`` is the bound port (useful with ``web.port: 0``)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self._server.config.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("web server did not stop within %.0f s", timeout)


def start_web(settings: Settings, database: Database, checks: Sequence[ReadinessCheck] = (),
              collectors: Sequence[Collector] = ()) -> WebServer:
    """Start the dashboard, /metrics and health endpoints on ``web.host:web.port``; returns once listening.

    ``checks`` join the readiness checks and ``collectors`` the metrics (serve's embedded workers)."""
    config = uvicorn.Config(
        create_app(settings, database, checks, collectors),
        host=settings.web.host,
        port=settings.web.port,
        log_config=None,  # the entry point configures logging
        access_log=False,  # access lines would carry URLs; the audit trail records logins
        lifespan="off",
        proxy_headers=bool(settings.web.forwarded_allow_ips),
        forwarded_allow_ips=settings.web.forwarded_allow_ips or None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="pacsnode-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(
                f"web server could not start on {settings.web.host}:{settings.web.port}; "
                "is the port in use? Change web.port."
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"web server did not start within {START_TIMEOUT:.0f} s")
        time.sleep(0.02)
    handle = WebServer(server, thread)
    log.info("web dashboard and /metrics at %s", handle.url)
    return handle
