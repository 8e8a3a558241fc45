"""Throw-away databases on the local PostgreSQL server (127.0.0.1:5432, trust auth), and private clusters a test
may crash."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from node.ports import free_port

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """Create an empty database named ``<prefix>_<random>``; yield its SQLAlchemy URL; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


PG_BIN = Path("/usr/lib/postgresql/15/bin")
_TEMPLATE: Path | None = None  # this process's freshly initialised cluster, copied for each PrivateCluster


class PrivateCluster:
    """A PostgreSQL cluster of a test's own: initdb in a temporary folder (as the ``postgres`` user when run as
    root, since initdb refuses root), on a free 127.0.0.1 port. A test may crash it (``pg_ctl stop -m
    immediate``: no shutdown checkpoint, as a killed server) and start it again, which runs crash recovery."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
        self._as_postgres = os.geteuid() == 0
        self.folder = self._owned_folder()
        self.data = self.folder / "data"
        self.port = free_port()
        global _TEMPLATE
        if _TEMPLATE is None or not _TEMPLATE.exists():  # initdb once per process (seconds); copies take less
            template = self._owned_folder() / "data"
            self._pg("initdb", "-D", str(template), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
            _TEMPLATE = template
            atexit.register(shutil.rmtree, template.parent, True)
        subprocess.run(["cp", "-a", str(_TEMPLATE), str(self.data)], check=True)

    def _owned_folder(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="pacsnode-pg-"))
        if self._as_postgres:
            shutil.chown(folder, "postgres", "postgres")
        return folder

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, program: str, *args: str) -> None:
        command = [str(PG_BIN / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr or result.stdout}")

    def start(self, **settings: str) -> "PrivateCluster":
        """Start the server (``settings``: server settings, e.g. ``synchronous_commit="off"``)."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        options += "".join(f" -c {name}={value}" for name, value in settings.items())
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w",
                 "start")
        return self

    def crash(self) -> None:
        """Stop the server at once, as if killed: what was not flushed to its WAL is gone."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            try:
                self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def private_cluster(**settings: str) -> Iterator[PrivateCluster]:
    """A started :class:`PrivateCluster` (with these server settings), removed afterwards."""
    cluster = PrivateCluster()
    try:
        yield cluster.start(**settings)
    finally:
        cluster.remove()
