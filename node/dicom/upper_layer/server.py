"""The listening socket: SO_REUSEPORT so receiving processes share the port, one thread per connection.

A connection costs a thread before it is an association, so connections still negotiating are capped, in all
and per peer address; one beyond a cap is answered at once with an A-ASSOCIATE-RJ (temporary congestion) and
closed, without a thread.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ACCEPT_POLL_SECONDS = 0.25  # how quickly stop() is noticed by the accepting thread
BACKLOG = 128
REFUSAL_DRAIN_BYTES = 65536
REFUSAL_LOG_SECONDS = 10.0  # at most one log line per peer address this often for refused connections
# A-ASSOCIATE-RJ: transient, service provider (presentation related), temporary congestion (PS3.8 9.3.4)
CONGESTION_REJECT = bytes((0x03, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0x03, 0x01))

Serve = Callable[[socket.socket, str, Callable[[], None]], None]
"""``serve(sock, peer_host, admitted)``: runs one connection; calls ``admitted()`` once it is an association."""


class PendingConnections:
    """Connections accepted but not yet associations: at most ``total``, and ``per_host`` from one address."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total, self.per_host = total, per_host
        self._by_host: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._last_logged: dict[str, tuple[float, int]] = {}

    def try_add(self, host: str) -> str | None:
        """Count a new connection from ``host``, or say why it is refused."""
        with self._lock:
            if self._count >= self.total:
                return f"{self._count} connections still negotiating (node.max_pending_connections)"
            if self._by_host.get(host, 0) >= self.per_host:
                return f"{self.per_host} connections from it still negotiating (node.max_pending_per_host)"
            self._count += 1
            self._by_host[host] = self._by_host.get(host, 0) + 1
            return None

    def remove(self, host: str) -> None:
        with self._lock:
            self._count -= 1
            left = self._by_host.pop(host) - 1
            if left:
                self._by_host[host] = left

    def should_log(self, host: str) -> int:
        """How many refusals of ``host`` to report now (0: stay quiet, it was logged a moment ago)."""
        now = time.monotonic()
        with self._lock:
            since, count = self._last_logged.get(host, (0.0, 0))
            if now - since < REFUSAL_LOG_SECONDS:
                self._last_logged[host] = (since, count + 1)
                return 0
            self._last_logged[host] = (now, 0)
            if len(self._last_logged) > 4096:  # forget quiet peers
                self._last_logged = {h: v for h, v in self._last_logged.items() if now - v[0] < REFUSAL_LOG_SECONDS}
            return count + 1


class AssociationServer:
    """Accepts connections on ``address`` and runs ``serve(sock, peer_host)`` for each in its own thread.

    With ``tls`` each connection is wrapped (server side) before ``serve`` sees it; a failed handshake
    is logged and closed. ``handshake_timeout`` bounds the TLS handshake. ``pending`` caps the connections
    that are not yet associations (unbounded when None).
    """

    def __init__(self, address: tuple[str, int], serve: Serve, *, tls: ssl.SSLContext | None = None,
                 handshake_timeout: float = 30.0, pending: PendingConnections | None = None) -> None:
        self.serve = serve
        self.tls = tls
        self.handshake_timeout = handshake_timeout
        self.pending = pending or PendingConnections(1 << 30, 1 << 30)
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self.socket.bind(address)
            self.socket.listen(BACKLOG)
        except OSError:
            self.socket.close()
            raise
        self.socket.settimeout(ACCEPT_POLL_SECONDS)
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_forever, name="pacsnode-scp", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._acceptor.start()

    def stop(self, timeout: float) -> None:
        """Stop accepting, then wait up to ``timeout`` seconds for the associations in progress."""
        self._stopping.set()
        self._acceptor.join()
        self.socket.close()
        deadline = time.monotonic() + timeout
        with self._lock:
            running = list(self._threads)
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._threads)

    def _accept_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, address = self.socket.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                log.warning("accepting a connection failed: %s", exc)
                continue
            host = str(address[0])
            refusal = self.pending.try_add(host)
            if refusal is not None:
                self._refuse(connection, host, refusal)
                continue
            connection.settimeout(None)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # responses are small writes
            thread = threading.Thread(target=self._run, args=(connection, host), daemon=True,
                                      name=f"pacsnode-association-{address[0]}:{address[1]}")
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _refuse(self, connection: socket.socket, host: str, reason: str) -> None:
        """Turn a connection away at once, without a thread: A-ASSOCIATE-RJ (unless TLS is due first), close."""
        try:
            connection.setblocking(False)
            if self.tls is None:
                connection.send(CONGESTION_REJECT)
                connection.shutdown(socket.SHUT_WR)
            connection.recv(REFUSAL_DRAIN_BYTES)  # what already arrived: closing on unread bytes would reset
        except OSError:
            pass
        finally:
            connection.close()
        refused = self.pending.should_log(host)
        if refused:
            log.warning("refused %d connection(s) from %s before association: %s", refused, host, reason)

    def _run(self, connection: socket.socket, host: str) -> None:
        pending = [True]

        def admitted() -> None:
            if pending:
                pending.clear()
                self.pending.remove(host)

        try:
            if self.tls is not None:
                connection = self._handshake(connection, host)
                if connection is None:
                    return
            self.serve(connection, host, admitted)
        finally:
            if pending:
                self.pending.remove(host)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _handshake(self, connection: socket.socket, host: str) -> ssl.SSLSocket | None:
        assert self.tls is not None
        connection.settimeout(self.handshake_timeout)
        try:
            return self.tls.wrap_socket(connection, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS handshake with %s failed: %s", host, exc)
            connection.close()
            return None
