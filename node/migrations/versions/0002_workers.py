"""Worker processes and their heartbeats (table ``workers``): dead workers are shown as dead.

Revision ID: 0002_workers
Revises: 0001_baseline
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_workers"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=128), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.String(length=64), nullable=False),
        sa.Column("state", sa.Enum("alive", "stopped", "dead", name="workerstate", native_enum=False, length=16),
                  nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_workers_state"), "workers", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_workers_state"), table_name="workers")
    op.drop_table("workers")
