"""Unauthenticated endpoints for supervisors and Prometheus: /healthz, /readyz and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from node.web.context import WebContext
from node.web.health import readiness
from node.web.metrics import make_registry


def router(context: WebContext) -> APIRouter:
    routes = APIRouter()
    registry = make_registry(context.settings, context.database, context.collectors)

    @routes.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @routes.get("/readyz")
    def readyz() -> JSONResponse:
        """Readiness: index reachable, storage writable, disk above the guard threshold, embedded workers up."""
        checks = readiness(context.settings, context.database, context.checks)
        ready = all(check.ok for check in checks)
        body = {"ready": ready, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
        return JSONResponse(body, status_code=200 if ready else 503)

    @routes.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return routes
