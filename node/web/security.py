"""Security headers on every response of the web server.

The pages list accession numbers, UIDs and previews of patient images: nothing may be cached, framed by
another site, sniffed into another type, or leak its address in a Referer. The pages need no script and only
their own inline style sheet and images.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
HSTS = "max-age=31536000"  # only over TLS: browsers ignore it otherwise, and it must not pin plain HTTP setups


def add_security_headers(app: FastAPI) -> None:
    """Give every response of ``app`` the headers above (and HSTS when served over TLS)."""

    @app.middleware("http")
    async def secure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        if request.url.scheme == "https":
            response.headers["Strict-Transport-Security"] = HSTS
        return response
