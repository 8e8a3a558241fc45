"""The node's web application: read-only dashboard (session login), /metrics, /healthz and /readyz.

Each concern is a router (``node.web.routes``) built from one ``WebContext``; state comes in as arguments,
never from globals.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client.registry import Collector

from node.config import Settings
from node.db import Database
from node.web.auth import NotLoggedIn
from node.web.context import WebContext
from node.web.health import ReadinessCheck
from node.web.routes import api, login, pages, probes, quality
from node.web.security import add_security_headers


def _not_logged_in(request: Request, _exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "send 'Authorization: Bearer <web.token>'"}, status_code=401)
    return RedirectResponse("/login", status_code=303)


def create_app(settings: Settings, database: Database, checks: Sequence[ReadinessCheck] = (),
               collectors: Sequence[Collector] = ()) -> FastAPI:
    """The FastAPI application for ``settings.web``; ``checks`` join /readyz, ``collectors`` /metrics."""
    app = FastAPI(title="pacsnode", docs_url=None, redoc_url=None, openapi_url=None)
    context = WebContext.build(settings, database, checks, collectors)
    app.add_exception_handler(NotLoggedIn, _not_logged_in)
    add_security_headers(app)
    for module in (probes, login, pages, quality, api):
        app.include_router(module.router(context))
    return app
