"""The `pacsnode` Typer application; command modules attach their commands to it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from node.config import Settings

app = typer.Typer(
    name="pacsnode",
    help="pacsnode: a DICOM node that runs AI pipelines on received series and returns SEG and SR to PACS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def settings_or_exit(config: Path | None) -> Settings:
    """The validated configuration at ``config``; a bad file prints the problem and exits with status 2."""
    from rich.console import Console

    from node.config import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
