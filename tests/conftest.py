"""Shared pytest fixtures (tests/support/fixtures.py); each stage keeps its own in tests/<stage>/conftest.py."""

pytest_plugins = ["tests.support.fixtures"]
