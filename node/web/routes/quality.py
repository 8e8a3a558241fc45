"""The dashboard's Quality page: scores against references over time, drift checks, references received."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from node.quality.page import format_number, quality_page
from node.web.context import WebContext


def router(context: WebContext) -> APIRouter:
    routes = APIRouter(dependencies=[Depends(context.require_login)])
    context.templates.env.filters["num"] = format_number

    @routes.get("/quality", response_class=HTMLResponse)
    def quality(request: Request) -> HTMLResponse:
        return context.page(request, "quality", **quality_page(context.settings, context.database))

    return routes
