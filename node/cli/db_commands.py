"""Commands of the index itself: `db upgrade` (to this release's schema) and `db current` (its revision)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from node.cli.app import app
from node.cli.options import ConfigOption, load_config

console = Console()
errors = Console(stderr=True)
db_app = typer.Typer(help="The node's index database: its schema revision and upgrades.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(config: Path = ConfigOption) -> None:
    """Upgrade the index to this release's schema in place, keeping every row (back it up first); a new
    index is created. Refuses an index a newer release has upgraded."""
    from node.db import Database
    from node.migrations import SchemaError, prepare

    settings = load_config(config)
    database = Database(settings.node.resolved_database_url())
    try:
        change = prepare(database.engine, upgrade=True)
    except SchemaError as exc:
        errors.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
    finally:
        database.dispose()
    if change.action == "created":
        console.print(f"new index created at schema revision {change.now}")
    elif change.action == "current":
        console.print(f"index already at schema revision {change.now}")
    else:
        console.print(f"index upgraded from schema revision {change.found} to {change.now}")


@db_app.command("current")
def current(config: Path = ConfigOption) -> None:
    """Print the index's schema revision and this release's; exit 1 when they differ."""
    from node.db import make_engine
    from node.migrations import database_revision, head_revision

    settings = load_config(config)
    engine = make_engine(settings.node.resolved_database_url())
    try:
        with engine.connect() as connection:
            revision = database_revision(connection)
    finally:
        engine.dispose()
    shown = revision or "none recorded (a new index, or one made before schema migrations)"
    console.print(f"index schema revision: {shown}; this release: {head_revision()}")
    if revision != head_revision():
        raise typer.Exit(1)
