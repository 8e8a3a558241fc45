"""A TCP relay in front of a real DICOM peer that breaks its first connections mid-transfer.

It passes bytes both ways. For the first ``breaks`` connections it cuts in once the caller has sent
``after_bytes``: ``mode="abort"`` sends the caller an A-ABORT PDU (source: service user) and closes both sides,
``mode="reset"`` resets the caller's connection (SO_LINGER 0, so the caller gets an RST). Later connections pass
untouched, like a PACS that recovers. 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

A_ABORT_BY_USER = bytes((0x07, 0x00, 0, 0, 0, 4, 0, 0, 0x00, 0x00))


@dataclass
class BreakingProxy:
    target_port: int
    mode: str = "abort"  # "abort" or "reset"
    after_bytes: int = 200_000
    breaks: int = 1
    broken: int = 0
    connections: int = 0
    port: int = 0
    _listener: socket.socket = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="breaking-proxy").start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def __enter__(self) -> "BreakingProxy":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                caller, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                breaking = self.broken < self.breaks
                if breaking:
                    self.broken += 1
            peer = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            for sock in (caller, peer):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._relay, args=(caller, peer, breaking), daemon=True).start()
            threading.Thread(target=self._relay, args=(peer, caller, False), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, breaking: bool) -> None:
        passed = 0
        try:
            while chunk := source.recv(65536):
                if breaking and passed + len(chunk) >= self.after_bytes:
                    self._break(caller=source, peer=sink)
                    return
                sink.sendall(chunk)
                passed += len(chunk)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _break(self, caller: socket.socket, peer: socket.socket) -> None:
        if self.mode == "abort":
            caller.sendall(A_ABORT_BY_USER)
            caller.shutdown(socket.SHUT_RDWR)
        else:
            caller.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        caller.close()
        try:
            peer.shutdown(socket.SHUT_RDWR)  # wakes the other relay thread, and the peer sees the end at once
        except OSError:
            pass
        peer.close()
