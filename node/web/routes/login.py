"""Dashboard login and logout: the token, posted once from the login form, opens a session (its cookie holds a
signed session ID, never the token); logout ends the session. Failed logins are limited per client address."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from node.operate import audit
from node.web.auth import COOKIE_NAME, token_matches
from node.web.context import WebContext


def _over_tls(request: Request) -> bool:
    """Served over TLS, directly or behind a proxy in ``web.forwarded_allow_ips`` that says so."""
    return request.url.scheme == "https"


def router(context: WebContext) -> APIRouter:
    routes = APIRouter()
    web = context.settings.web

    @routes.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return context.page(request, "login", error="" if web.token else "The dashboard is closed: set web.token.")

    @routes.post("/login")
    async def login(request: Request) -> Response:
        host = request.client.host if request.client else "unknown"
        wait = context.logins.retry_after(host)
        if wait:
            page = context.page(request, "login", error=f"Too many failed logins: try again in {wait} s.")
            page.status_code, page.headers["Retry-After"] = 429, str(wait)
            return page
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        ok = token_matches(web.token, (form.get("token") or [""])[0])
        if not ok:
            reached = context.logins.failed(host)
            audit.dashboard_login(context.database, client_host=host, success=False,
                                  detail="dashboard token login; further attempts refused for a minute" if reached
                                  else None)
            return context.page(request, "login", error="Wrong token.")
        context.logins.succeeded(host)
        audit.dashboard_login(context.database, client_host=host, success=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE_NAME, context.sessions.open(), max_age=int(context.sessions.lifetime),
                            httponly=True, secure=_over_tls(request), samesite="strict", path="/")
        return response

    def logout(request: Request) -> Response:
        context.sessions.close(request.cookies.get(COOKIE_NAME, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, secure=_over_tls(request), samesite="strict")
        return response

    routes.add_api_route("/logout", logout, methods=["GET", "POST"])
    return routes
