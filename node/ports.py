"""Loopback port helpers for the demo, local peers and tests."""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

PORT_RANGE_ENV = "PACSNODE_PORT_RANGE"
"""``LOW-HIGH``: where ``free_port`` draws from (processes working side by side each take their own range)."""

_handed_out: set[int] = set()


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, so an outgoing connection never takes one between the choice
    and the server's bind (ports handed out by the kernel, ``bind(0)``, come from that busy range)."""
    if configured := os.environ.get(PORT_RANGE_ENV):
        low, _, high = configured.partition("-")
        return int(low), int(high)
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return 20000, max(20000 + 1000, ephemeral_low - 1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, never one this process handed out before."""
    low, high = _port_range()
    for _ in range(200):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # the range is crowded: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Return once something accepts connections on ``host:port``; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
