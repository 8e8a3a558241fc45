"""What every router of the web application shares: the settings, the index, the templates and the login check."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client.registry import Collector

from node.config import Settings
from node.db import Database
from node.web.auth import COOKIE_NAME, LoginLimiter, NotLoggedIn, Sessions, bearer_token, token_matches
from node.web.health import ReadinessCheck

TEMPLATES = Path(__file__).parent / "templates"


def format_time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


@dataclass
class WebContext:
    """The state the routers work with, made once by ``create_app`` and passed in (never a global)."""

    settings: Settings
    database: Database
    templates: Jinja2Templates
    sessions: Sessions
    logins: LoginLimiter
    checks: Sequence[ReadinessCheck] = ()  # readiness of what the serving process runs besides the web server
    collectors: Sequence[Collector] = field(default_factory=tuple)  # its metrics

    @classmethod
    def build(cls, settings: Settings, database: Database, checks: Sequence[ReadinessCheck] = (),
              collectors: Sequence[Collector] = ()) -> "WebContext":
        templates = Jinja2Templates(directory=TEMPLATES)
        templates.env.filters["time"] = format_time
        return cls(settings, database, templates, Sessions(settings.web.session_minutes * 60),
                   LoginLimiter(settings.web.login_attempts_per_minute), tuple(checks), tuple(collectors))

    def require_login(self, request: Request) -> None:
        """A dependency of every dashboard page and API call: a live session or the Bearer token, or NotLoggedIn."""
        if not self.settings.web.token:
            raise NotLoggedIn()  # the dashboard is closed, whatever a cookie says
        if self.sessions.valid(request.cookies.get(COOKIE_NAME, "")):
            return
        if not token_matches(self.settings.web.token, bearer_token(request)):
            raise NotLoggedIn()

    def page(self, request: Request, name: str, **context: Any) -> HTMLResponse:
        """The template ``name``.html with the dashboard's common context."""
        context.update(refresh_seconds=self.settings.web.refresh_seconds, ae_title=self.settings.node.ae_title,
                       active=name)
        return self.templates.TemplateResponse(request, f"{name}.html", context)
