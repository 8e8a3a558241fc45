"""Commands of this stage (filled in by the stage's owner)."""

from node.cli.app import app  # noqa: F401
