"""Dashboard login by token: a Bearer header, or a cookie set by the login form."""

from __future__ import annotations

import hmac

from fastapi import Request

COOKIE_NAME = "pacsnode_token"


class NotLoggedIn(Exception):
    """The request carries no valid token; HTML pages answer with the login page, the API with 401."""


def presented_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE_NAME, "")


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison; an empty configured token never matches (the dashboard stays closed)."""
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())
