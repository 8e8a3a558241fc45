"""Schema migrations of the index, with Alembic: a new index starts at the newest revision, an older one is
upgraded in place, a newer one is refused.

The revisions live in ``node/migrations/versions``, one linear chain from ``0001_baseline`` (the schema of the
last release made without migrations). A database that release made holds the baseline's tables and no
``alembic_version`` table: it is recognised and stamped as the baseline, then upgraded like any other.
Only `pacsnode serve` with ``node.upgrade_database`` and `pacsnode db upgrade` change an existing schema;
every other process refuses an index whose revision is not this release's, saying what to run.

One process at a time inspects and changes the schema: PostgreSQL holds an advisory lock for the transaction,
SQLite a lock file beside the database, so the node and its workers may start together on a new index.

To add a revision after changing ``node/db.py``: with ``PACSNODE_CONFIG`` naming a configuration whose index
is at the newest revision, ``alembic revision --autogenerate --rev-id NNNN_what -m "what changes"`` (from the
repository root; ``alembic.ini`` points here). Keep the chain linear: revise the newest revision.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001_baseline"
BASELINE_TABLES = frozenset({
    "studies", "series", "instances", "jobs", "result_objects", "deliveries", "destination_refusals", "events",
    "audit_events",
})
"""The tables of the baseline: a database holding them all and no revision table was made by that release."""
ADVISORY_LOCK_KEY = 0x7061_6373  # "pacs": PostgreSQL's lock for schema changes of this index
UPGRADE_HINT = "run `pacsnode db upgrade --config FILE` (after a backup), or set node.upgrade_database: true"


class SchemaError(RuntimeError):
    """The index's schema cannot be used by this release as it stands; the message says what to do."""


@dataclass(frozen=True)
class SchemaChange:
    """What preparing an index did: the revision it found (None: a new database) and the one it left."""

    found: str | None
    now: str
    action: str  # "created", "upgraded", "current"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the index; revisions run on ``connection`` when one is given."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def script_directory() -> ScriptDirectory:
    """The revisions this release knows (read once per process)."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision: the schema this release works with."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} newest revisions {sorted(heads)}: the chain must be linear")
    return heads[0]


def database_revision(connection: Connection) -> str | None:
    """The revision recorded in the database, or None when it records none."""
    return MigrationContext.configure(connection).get_current_revision()


def _known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except CommandError:
        return False


def _describe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other process changing this index's schema shares."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    lock_file = None
    if database and database != ":memory:":
        lock_file = open(f"{database}-schema.lock", "a+b")  # noqa: SIM115 - closed below
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when closed, or when the process dies
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            yield connection
    finally:
        if lock_file is not None:
            lock_file.close()


def _recognise(engine: Engine, connection: Connection) -> str | None:
    """The revision of a database that records none: None when it is empty, the baseline when the release
    before migrations made it; anything else is refused."""
    tables = set(inspect(connection).get_table_names())
    if not tables & BASELINE_TABLES:
        return None
    missing = BASELINE_TABLES - tables
    if missing:
        raise SchemaError(
            f"{_describe(engine)} holds some of pacsnode's tables but not {sorted(missing)}, and no schema revision: "
            "it is not an index pacsnode made; point node.database_url at pacsnode's own database"
        )
    command.stamp(alembic_config(connection), BASELINE)
    log.info("index %s: made before schema migrations; recorded as revision %s", _describe(engine), BASELINE)
    return BASELINE


def prepare(engine: Engine, upgrade: bool = False) -> SchemaChange:
    """Bring the index at ``engine`` to this release's schema, or say why not.

    A new (empty) database is created at the newest revision. An older one is upgraded when ``upgrade`` is
    true and refused otherwise; one newer than this release, or one pacsnode did not make, is refused.
    Raises :class:`SchemaError` with what to do.
    """
    head = head_revision()
    with _schema_lock(engine) as connection:
        found = database_revision(connection)
        if found is None:
            found = _recognise(engine, connection)
            if found is None:
                command.upgrade(alembic_config(connection), head)
                log.info("index %s: created at schema revision %s", _describe(engine), head)
                return SchemaChange(None, head, "created")
        if found == head:
            return SchemaChange(found, head, "current")
        if not _known(found):
            raise SchemaError(
                f"{_describe(engine)} is at schema revision {found}, which this release does not know (its newest "
                f"is {head}): a newer pacsnode upgraded it. Run that release (or a newer one) against this index"
            )
        if not upgrade:
            raise SchemaError(f"{_describe(engine)} is at schema revision {found}; this release needs {head}: {UPGRADE_HINT}")
        command.upgrade(alembic_config(connection), head)
    log.warning("index %s: upgraded from schema revision %s to %s", _describe(engine), found, head)
    return SchemaChange(found, head, "upgraded")
