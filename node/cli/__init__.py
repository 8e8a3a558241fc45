"""Command-line entry point: `pacsnode`. Each module below adds its own commands."""

from node.cli.app import app
from node.cli import receive_commands, queue_commands, pipeline_commands, delivery_commands, db_commands  # noqa: F401,E402

__all__ = ["app"]
