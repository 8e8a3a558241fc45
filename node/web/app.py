"""The node's web application: read-only dashboard (token login), /metrics, /healthz and /readyz."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node import audit
from node.config import Settings
from node.db import Database
from node.diskguard import disk_state
from node.quality.page import format_number, quality_page
from node.web import queries
from node.web.auth import COOKIE_NAME, NotLoggedIn, presented_token, token_matches
from node.web.health import broker_queues, readiness
from node.web.metrics import make_registry
from node.web.previews import PreviewUnavailable, preview_png

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


def _format_time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def create_app(settings: Settings, database: Database) -> FastAPI:
    """The FastAPI application for ``settings.web``; state comes in as arguments, never from globals."""
    app = FastAPI(title="pacsnode", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=TEMPLATES)
    templates.env.filters["time"] = _format_time
    templates.env.filters["num"] = format_number
    registry = make_registry(settings, database)
    web = settings.web

    def require_login(request: Request) -> None:
        if not token_matches(web.token, presented_token(request)):
            raise NotLoggedIn()

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        context.update(refresh_seconds=web.refresh_seconds, ae_title=settings.node.ae_title, active=name)
        return templates.TemplateResponse(request, f"{name}.html", context)

    @app.exception_handler(NotLoggedIn)
    def _not_logged_in(request: Request, _exc: NotLoggedIn) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "send 'Authorization: Bearer <web.token>'"}, status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Readiness: index reachable, storage writable, disk above the guard threshold."""
        checks = readiness(settings, database)
        ready = all(check.ok for check in checks)
        body = {"ready": ready, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return page(request, "login", error="" if web.token else "The dashboard is closed: set web.token.")

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        host = request.client.host if request.client else None
        ok = token_matches(web.token, token)
        audit.dashboard_login(database, client_host=host, success=ok)
        if not ok:
            return page(request, "login", error="Wrong token.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="strict")
        return response

    @app.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME)
        return response

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    def overview(request: Request) -> HTMLResponse:
        with database.session() as session:
            data = {
                "series": queries.recent_series(session),
                "results": queries.recent_results(session),
                "queue": queries.queue_summary(session),
            }
        return page(request, "overview", disk=disk_state(settings), **data)

    @app.get("/jobs", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    def jobs(request: Request) -> HTMLResponse:
        with database.session() as session:
            rows = queries.recent_jobs(session, limit=100)
        return page(request, "jobs", jobs=rows)

    @app.get("/deliveries", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    def deliveries(request: Request) -> HTMLResponse:
        with database.session() as session:
            rows = queries.recent_deliveries(session, limit=100)
        return page(request, "deliveries", deliveries=rows)

    @app.get("/health", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    def health(request: Request) -> HTMLResponse:
        with database.session() as session:
            data = {
                "workers": queries.workers(session),
                "queue": queries.queue_summary(session),
                "events": queries.recent_events(session),
                "audit": queries.recent_audit(session),
            }
        broker, broker_problem = broker_queues(settings)
        return page(request, "health", checks=readiness(settings, database), broker=broker,
                    broker_problem=broker_problem, **data)

    @app.get("/quality", response_class=HTMLResponse, dependencies=[Depends(require_login)])
    def quality(request: Request) -> HTMLResponse:
        return page(request, "quality", **quality_page(settings, database))

    @app.get("/results/{result_id}/preview.png", dependencies=[Depends(require_login)])
    def preview(result_id: int) -> Response:
        try:
            png = preview_png(settings, database, result_id)
        except PreviewUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/api/status", dependencies=[Depends(require_login)])
    def status() -> dict[str, Any]:
        with database.session() as session:
            queue = queries.queue_summary(session)
            workers = queries.workers(session)
        state = disk_state(settings)
        return {
            "ae_title": settings.node.ae_title,
            "queue": queue,
            "workers": [{**w, "last_seen": _format_time(w["last_seen"])} for w in workers],
            "disk": {"free_bytes": state.free_bytes, "guard_active": state.low, "detail": state.describe()},
        }

    return app
