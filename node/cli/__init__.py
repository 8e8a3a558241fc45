"""Command-line entry point: `pacsnode`. Each module below adds its own commands."""

from node.cli.app import app
from node.cli import (  # noqa: F401,E402
    bundle_commands, db_commands, delivery_commands, pipeline_commands, quality_commands, queue_commands,
    receive_commands,
)

__all__ = ["app"]
