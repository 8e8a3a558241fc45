"""Dashboard login and logout by token (the login form sets the session cookie)."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from node.operate import audit
from node.web.auth import COOKIE_NAME, token_matches
from node.web.context import WebContext


def router(context: WebContext) -> APIRouter:
    routes = APIRouter()
    web = context.settings.web

    @routes.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return context.page(request, "login", error="" if web.token else "The dashboard is closed: set web.token.")

    @routes.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        host = request.client.host if request.client else None
        ok = token_matches(web.token, token)
        audit.dashboard_login(context.database, client_host=host, success=ok)
        if not ok:
            return context.page(request, "login", error="Wrong token.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE_NAME, token, httponly=True, samesite="strict")
        return response

    @routes.get("/logout")
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME)
        return response

    return routes
