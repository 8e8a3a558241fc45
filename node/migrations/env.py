"""Alembic's environment for the index.

pacsnode runs revisions on the connection it hands over (``node.migrations``). Run by the ``alembic`` command
during development (`alembic revision --autogenerate`), it opens the index that ``sqlalchemy.url`` or the
configuration named by ``PACSNODE_CONFIG`` points at.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from node.config import CONFIG_ENV, load_settings
from node.db import Base, make_engine


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or load_settings(
        os.environ.get(CONFIG_ENV)
    ).node.resolved_database_url()
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


run()
