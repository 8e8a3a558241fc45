"""The listening socket: SO_REUSEPORT so receiving processes share the port, one thread per association."""

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

Serve = Callable[[socket.socket, str], None]


class AssociationServer:
    """Accepts connections on ``address`` and runs ``serve(sock, peer_host)`` for each in its own thread.

    With ``tls`` each connection is wrapped (server side) before ``serve`` sees it; a failed handshake
    is logged and closed. ``handshake_timeout`` bounds the TLS handshake.
    """

    def __init__(self, address: tuple[str, int], serve: Serve, *, tls: ssl.SSLContext | None = None,
                 handshake_timeout: float = 30.0) -> None:
        self.serve = serve
        self.tls = tls
        self.handshake_timeout = handshake_timeout
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
            connection.settimeout(None)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # responses are small writes
            thread = threading.Thread(target=self._run, args=(connection, str(address[0])), daemon=True,
                                      name=f"pacsnode-association-{address[0]}:{address[1]}")
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _run(self, connection: socket.socket, host: str) -> None:
        try:
            if self.tls is not None:
                connection = self._handshake(connection, host)
                if connection is None:
                    return
            self.serve(connection, host)
        finally:
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
