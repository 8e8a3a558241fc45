"""What every command shares: the ``--config`` option (or ``PACSNODE_CONFIG``) and loading it once."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from node.config import CONFIG_ENV, ConfigError, Settings, load_settings
from node.db import Database, open_database

CONFIG_HELP = f"The node's YAML configuration file (or ${CONFIG_ENV})."

ConfigOption = typer.Option(None, "--config", "-c", envvar=CONFIG_ENV, help=CONFIG_HELP)
"""An optional configuration: without one, the defaults and PACSNODE_* environment variables apply."""
RequiredConfigOption = typer.Option(..., "--config", "-c", envvar=CONFIG_ENV, help=CONFIG_HELP)
"""A configuration the command cannot do without (serve, worker)."""

_errors = Console(stderr=True)


def load_config(config: Path | None) -> Settings:
    """The validated settings of ``config``; a bad file ends the command with exit code 2 naming the key."""
    try:
        return load_settings(config)
    except ConfigError as exc:
        _errors.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc


def open_index(settings: Settings, upgrade: bool = False) -> Database:
    """The node's index database; an index this release cannot use as it stands ends the command with exit
    code 2 and what to do (``upgrade`` brings an older one to this release's schema)."""
    from node.migrations import SchemaError

    try:
        return open_database(settings.node.resolved_database_url(), upgrade=upgrade)
    except SchemaError as exc:
        _errors.print(str(exc), style="red", markup=False)
        raise typer.Exit(2) from exc
