"""Dashboard login: a token exchanged for a session (a signed, expiring, revocable cookie), or a Bearer header.

The session cookie never carries the token. It holds a random session ID and its HMAC signature under a key
made when the web server starts; the server keeps each live session with its expiry, so logging out ends it
for good, and a restart ends them all. Failed logins are limited per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

from fastapi import Request

COOKIE_NAME = "pacsnode_session"


class NotLoggedIn(Exception):
    """The request carries no valid session or token; HTML pages answer with the login page, the API with 401."""


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison; an empty configured token never matches (the dashboard stays closed)."""
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())


class Sessions:
    """Live dashboard sessions: ``open`` gives a cookie value, ``valid`` checks one, ``close`` revokes it."""

    def __init__(self, lifetime_seconds: float, key: bytes | None = None) -> None:
        self.lifetime = lifetime_seconds
        self._key = key or secrets.token_bytes(32)
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._expiry = {sid: end for sid, end in self._expiry.items() if end > now}  # forget ended ones
            self._expiry[session_id] = now + self.lifetime
        return f"{session_id}.{self._sign(session_id)}"

    def valid(self, cookie: str) -> bool:
        session_id = self._verified(cookie)
        if session_id is None:
            return False
        with self._lock:
            end = self._expiry.get(session_id)
            if end is None or end <= time.monotonic():
                self._expiry.pop(session_id, None)
                return False
        return True

    def close(self, cookie: str) -> None:
        session_id = self._verified(cookie)
        if session_id is not None:
            with self._lock:
                self._expiry.pop(session_id, None)

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    def _verified(self, cookie: str) -> str | None:
        session_id, _, signature = cookie.partition(".")
        if not session_id or not hmac.compare_digest(signature.encode(), self._sign(session_id).encode()):
            return None
        return session_id


class LoginLimiter:
    """At most ``attempts`` failed logins per client address in a sliding minute.

    Kept in the web server's memory (one process serves the dashboard), so no store is needed.
    """

    WINDOW_SECONDS = 60.0

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            recent = self._recent(client, time.monotonic())
            if len(recent) < self.attempts:
                return 0
            return max(1, int(recent[0] + self.WINDOW_SECONDS - time.monotonic()) + 1)

    def failed(self, client: str) -> bool:
        """Count a failed login; True when it is the one that reaches the limit."""
        with self._lock:
            recent = self._recent(client, time.monotonic())
            recent.append(time.monotonic())
            return len(recent) == self.attempts

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and recent[0] <= now - self.WINDOW_SECONDS:
            recent.popleft()
        if len(self._failures) > 10000:  # forget addresses with no recent failure
            self._failures = {c: q for c, q in self._failures.items() if q and q[-1] > now - self.WINDOW_SECONDS}
            recent = self._failures.setdefault(client, recent)
        return recent
