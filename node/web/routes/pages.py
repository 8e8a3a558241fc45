"""The dashboard's pages (overview, jobs, deliveries, health) and result previews; all need a login."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from node.assemble.summary import completion_summary, reopenings_by_sender
from node.receive.diskguard import disk_state
from node.web import queries
from node.web.context import WebContext
from node.web.health import broker_queues, readiness
from node.web.previews import PreviewUnavailable, preview_png


def router(context: WebContext) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(context.require_login)])
    settings, database = context.settings, context.database

    @routes.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> HTMLResponse:
        with database.session() as session:
            data = {
                "series": queries.recent_series(session),
                "results": queries.recent_results(session),
                "queue": queries.queue_summary(session),
                "completion": completion_summary(session),
                "reopenings": reopenings_by_sender(session),
            }
        return context.page(request, "overview", disk=disk_state(settings), **data)

    @routes.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request) -> HTMLResponse:
        with database.session() as session:
            rows = queries.recent_jobs(session, limit=100)
        return context.page(request, "jobs", jobs=rows)

    @routes.get("/deliveries", response_class=HTMLResponse)
    def deliveries(request: Request) -> HTMLResponse:
        with database.session() as session:
            rows = queries.recent_deliveries(session, limit=100)
        return context.page(request, "deliveries", deliveries=rows)

    @routes.get("/health", response_class=HTMLResponse)
    def health(request: Request) -> HTMLResponse:
        with database.session() as session:
            data = {
                "workers": queries.workers(session),
                "queue": queries.queue_summary(session),
                "events": queries.recent_events(session),
                "audit": queries.recent_audit(session),
            }
        broker, broker_problem = broker_queues(settings)
        return context.page(request, "health", checks=readiness(settings, database, context.checks), broker=broker,
                            broker_problem=broker_problem, **data)

    @routes.get("/results/{result_id}/preview.png")
    def preview(result_id: int) -> Response:
        try:
            png = preview_png(settings, database, result_id)
        except PreviewUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=404)
        return Response(png, media_type="image/png")  # never cached: node.web.security

    return routes
