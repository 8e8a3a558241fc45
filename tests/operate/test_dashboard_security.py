"""The dashboard's sessions, login limit and security headers, over real HTTP and in a real Chromium.

A login opens a session whose cookie holds a signed session ID (never the token), HttpOnly and SameSite=Strict,
Secure when TLS ends at a trusted proxy; logout ends the session for good; sessions expire; failed logins are
limited per client address; every response carries the security headers, and the pages still render under them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from node.db import AuditEvent
from node.operate import audit
from node.web.server import WebServer, start_web
from node.web.security import CONTENT_SECURITY_POLICY
from tests.support.node_state import TOKEN, NodeState, build_state

pytestmark = pytest.mark.timeout(120)

FORM = {"content-type": "application/x-www-form-urlencoded"}
HEADERS = {"content-security-policy": CONTENT_SECURITY_POLICY, "x-frame-options": "DENY",
           "x-content-type-options": "nosniff", "cache-control": "no-store", "referrer-policy": "no-referrer"}


@contextmanager
def _server(tmp_path: Path, **web: object) -> Iterator[tuple[WebServer, NodeState]]:
    """A web server of its own (its login limiter and sessions are not shared with other tests)."""
    state = build_state(tmp_path / "storage", **web)
    server = start_web(state.settings, state.database)
    try:
        yield server, state
    finally:
        server.stop()
        state.database.dispose()


def _login(client: httpx.Client, token: str = TOKEN, **headers: str) -> httpx.Response:
    return client.post("/login", content=f"token={token}", headers={**FORM, **headers})


def test_a_login_opens_a_session_whose_cookie_is_not_the_token(web: WebServer) -> None:
    with httpx.Client(base_url=web.url) as client:
        response = _login(client)
        assert response.status_code == 303
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith("pacsnode_session=") and TOKEN not in set_cookie
        attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes and "secure" not in attributes
        assert "samesite=strict" in set_cookie.lower() and "max-age=28800" in set_cookie.lower()  # 8 h default
        assert client.get("/").status_code == 200
    genuine = client.cookies["pacsnode_session"]
    tampered = genuine[:-1] + ("1" if genuine.endswith("0") else "0")
    for forged in ({"pacsnode_session": TOKEN}, {"pacsnode_token": TOKEN}, {"pacsnode_session": tampered}):
        assert httpx.get(f"{web.url}/", cookies=forged).status_code == 303


def test_logout_ends_the_session_for_good(web: WebServer) -> None:
    with httpx.Client(base_url=web.url) as client:
        _login(client)
        cookie = client.cookies["pacsnode_session"]
        assert client.get("/jobs").status_code == 200
        out = client.post("/logout")
        assert out.status_code == 303 and 'pacsnode_session=""' in out.headers["set-cookie"]
    replayed = httpx.get(f"{web.url}/jobs", cookies={"pacsnode_session": cookie})
    assert replayed.status_code == 303 and replayed.headers["location"] == "/login"


def test_sessions_expire(tmp_path: Path) -> None:
    with _server(tmp_path, session_minutes=0.02) as (server, _), httpx.Client(base_url=server.url) as client:
        _login(client)
        assert client.get("/").status_code == 200
        time.sleep(1.5)
        assert client.get("/").status_code == 303


def test_failed_logins_are_limited_per_address(tmp_path: Path) -> None:
    """Five wrong tokens a minute from one address, then 429 (the right token too); the audit trail keeps one row
    per counted attempt, not one per request; another client address (named by a trusted proxy) still logs in."""
    with _server(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as (server, state), \
            httpx.Client(base_url=server.url) as client:
        answers = [_login(client, "wrong") for _ in range(5)]
        assert all(a.status_code == 200 and "Wrong token" in a.text for a in answers)
        refused = [_login(client, "wrong") for _ in range(20)] + [_login(client)]
        assert {r.status_code for r in refused} == {429}
        assert 50 <= int(refused[-1].headers["retry-after"]) <= 61 and "Too many failed logins" in refused[-1].text
        assert _login(client, **{"X-Forwarded-For": "10.1.2.3"}).status_code == 303
        with state.database.session() as session:
            rows = session.scalars(select(AuditEvent).where(AuditEvent.event == audit.DASHBOARD_LOGIN)).all()
    failures = [row for row in rows if row.outcome != 0]
    assert len(failures) == 5 and "refused for a minute" in (failures[-1].detail or "")
    assert [row.source_host for row in rows if row.outcome == 0] == ["10.1.2.3"]


def test_the_cookie_is_secure_when_tls_ends_at_a_trusted_proxy(tmp_path: Path) -> None:
    with _server(tmp_path, forwarded_allow_ips=["127.0.0.1"]) as (server, _), httpx.Client(base_url=server.url) as client:
        behind_tls = _login(client, **{"X-Forwarded-Proto": "https"})
        plain = _login(client)
    assert "secure" in behind_tls.headers["set-cookie"].lower()
    assert behind_tls.headers["strict-transport-security"].startswith("max-age=")
    assert "secure" not in plain.headers["set-cookie"].lower() and "strict-transport-security" not in plain.headers


def test_an_untrusted_client_cannot_claim_tls(web: WebServer) -> None:
    with httpx.Client(base_url=web.url) as client:
        response = _login(client, **{"X-Forwarded-Proto": "https"})  # no web.forwarded_allow_ips
    assert "secure" not in response.headers["set-cookie"].lower()


def test_every_response_carries_the_security_headers(node_state: NodeState, web: WebServer) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    paths = ["/", "/jobs", "/deliveries", "/health", f"/results/{node_state.seg_result_id}/preview.png",
             "/api/status", "/login", "/metrics", "/healthz", "/readyz", "/no-such-page"]
    for path in paths:
        response = httpx.get(f"{web.url}{path}", headers=bearer)
        assert {name: response.headers.get(name) for name in HEADERS} == HEADERS, path


def _form_login(page, token: str = TOKEN):  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.fill("#token", token)
    page.click("#login")


def test_in_chromium_the_session_cookie_is_http_only_and_ends_at_logout(browser, web: WebServer) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=web.url)
    page = context.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    _form_login(page)
    page.wait_for_url(f"{web.url}/")
    [cookie] = context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
        "pacsnode_session", True, False, "Strict")
    assert TOKEN not in cookie["value"] and page.evaluate("document.cookie") == ""
    response = page.goto("/jobs")
    assert response is not None and response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    header_colour = page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor")
    assert header_colour == "rgb(29, 43, 69)"  # the inline style sheet still applies under the policy
    page.click("text=Log out")
    page.wait_for_url(f"{web.url}/login")
    assert context.cookies() == []
    replay = browser.new_context(base_url=web.url)
    replay.add_cookies([{"name": cookie["name"], "value": cookie["value"], "url": web.url}])  # the old one, replayed
    again = replay.new_page()
    again.goto("/jobs")
    assert again.url.endswith("/login")
    assert refused == []
    replay.close()
    context.close()


def test_in_chromium_too_many_wrong_tokens_are_refused(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with _server(tmp_path) as (server, _):
        context = browser.new_context(base_url=server.url)
        page = context.new_page()
        for _ in range(5):
            _form_login(page, "wrong")
            assert "Wrong token" in page.inner_text("#login-error")
        _form_login(page)
        assert "Too many failed logins" in page.inner_text("#login-error")
        assert page.url.endswith("/login") and context.cookies() == []
        context.close()
