"""Run a real `pacsnode serve` subprocess on a free 127.0.0.1 port, for end-to-end tests.

Usage in a fixture::

    with NodeProcess(tmp_path, extra={"routes": [...]}) as node:
        subprocess.run(["storescu", "127.0.0.1", str(node.port), ...])
        node.wait_for(lambda: node.series_states() == {"complete": 1})
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from node.config import load_settings
from node.db import Database, Instance, Series, open_database
from node.ports import free_port
from node.dicom.echo import c_echo
from node.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
PACSNODE = REPO / ".venv" / "bin" / "pacsnode"



def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``, merging nested mappings (lists are replaced)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def echo(port: int, ae_title: str = "PACSNODE", calling: str = "ECHOSCU", timeout: float = 2.0) -> bool:
    """True when a C-ECHO to 127.0.0.1:``port`` succeeds."""
    return c_echo("127.0.0.1", port, ae_title, calling_ae_title=calling, timeout=timeout).ok


class NodeProcess:
    """A `pacsnode serve` subprocess with its own storage folder, config file and log file.

    ``extra`` is merged into the generated configuration (any section: node, queue, routes, ...).
    ``database_url`` selects the index (default: SQLite in the storage folder).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        extra: dict[str, Any] | None = None,
        database_url: str = "",
        port: int | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "pacsnode.yaml"
        self.log_path = self.workdir / "pacsnode.log"
        self.start_timeout = start_timeout
        self.env = env or {}
        base = {
            "node": {
                "ae_title": "PACSNODE",
                "host": "127.0.0.1",
                "port": self.port,
                "storage_dir": str(self.storage_dir),
                "database_url": database_url,
                "completion": {"quiet_seconds": 2},
            },
            "queue": {"embedded_worker": False},
            "logging": {"level": "INFO"},
        }
        self.config = deep_merge(base, extra or {})
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.settings = load_settings(self.config_path)
        self.process: subprocess.Popen | None = None
        self._database: Database | None = None

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "NodeProcess":
        """Start `pacsnode serve` and wait until it answers C-ECHO."""
        offset = self.launch()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pacsnode serve exited with {self.process.returncode}:\n{self.log()}")
            # Ready once every receiving process listens ("pacsnode serving") and C-ECHO is answered.
            if "pacsnode serving" in self._log_since(offset) and echo(self.port, self.settings.node.ae_title,
                                                                      timeout=1.0):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pacsnode serve did not answer C-ECHO in {self.start_timeout} s:\n{self.log()}")

    def launch(self) -> int:
        """Start `pacsnode serve` without waiting for it; return where this start's lines begin in the log."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        command = [str(PACSNODE), "serve", "--config", str(self.config_path)]
        if not PACSNODE.exists():
            command = [sys.executable, "-m", "node.cli", "serve", "--config", str(self.config_path)]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        log.close()
        return offset

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        if self._database is not None:
            self._database.dispose()
            self._database = None
        return code

    def kill(self) -> None:
        """SIGKILL the node and its process group members we know of (a crash)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as fp:
            fp.seek(offset)
            return fp.read().decode(errors="replace")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # index helpers -------------------------------------------------------------------------------
    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = open_database(self.settings.node.resolved_database_url())
        return self._database

    def instance_count(self) -> int:
        with self.database.session() as session:
            return int(session.scalar(select(func.count()).select_from(Instance)) or 0)

    def series(self) -> list[Series]:
        with self.database.session() as session:
            return list(session.scalars(select(Series)).all())

    def series_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.series():
            state = getattr(row.state, "value", row.state)
            counts[state] = counts.get(state, 0) + 1
        return counts

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
        """Poll ``condition`` until it returns something truthy; raise with the node's log otherwise."""
        try:
            return wait_until(condition, timeout, "the condition", interval)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; node log:\n{self.log()[-4000:]}") from None

    @property
    def address(self) -> str:
        return f"{self.settings.node.ae_title}@127.0.0.1:{self.port}"
