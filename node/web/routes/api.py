"""The JSON API for scripts and monitoring (Bearer token): the node's status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from node.receive.diskguard import disk_state
from node.web import queries
from node.web.context import WebContext, format_time


def router(context: WebContext) -> APIRouter:
    routes = APIRouter(prefix="/api", dependencies=[Depends(context.require_login)])
    settings, database = context.settings, context.database

    @routes.get("/status")
    def status() -> dict[str, Any]:
        with database.session() as session:
            queue = queries.queue_summary(session)
            workers = queries.workers(session)
        state = disk_state(settings)
        return {
            "ae_title": settings.node.ae_title,
            "queue": queue,
            "workers": [{**w, "last_seen": format_time(w["last_seen"])} for w in workers],
            "disk": {"free_bytes": state.free_bytes, "guard_active": state.low, "detail": state.describe()},
        }

    return routes
