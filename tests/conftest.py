"""Shared pytest fixtures; each stage keeps its own in tests/<stage>/conftest.py and tests/support/."""
