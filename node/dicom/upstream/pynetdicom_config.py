"""Fence: pynetdicom's process-wide settings, set in one place (its configuration module is ``pynetdicom._config``).

pacsnode sends stored files as their bytes, without decoding and re-encoding them
(``STORE_SEND_CHUNKED_DATASET``): the presentation contexts it proposes match each file's own transfer syntax.
Written for pynetdicom 3.0 (pyproject bounds it below 3.1); ``missing_upstream()`` lists what an upgrade removed.
"""

from __future__ import annotations

from pynetdicom import _config

SETTINGS = {"STORE_SEND_CHUNKED_DATASET": True}


def apply() -> None:
    """Set pacsnode's pynetdicom settings for this process."""
    for name, value in SETTINGS.items():
        setattr(_config, name, value)


def missing_upstream() -> list[str]:
    """Settings the installed pynetdicom no longer knows (empty when all is there)."""
    return [f"pynetdicom._config.{name}" for name in SETTINGS if not hasattr(_config, name)]
