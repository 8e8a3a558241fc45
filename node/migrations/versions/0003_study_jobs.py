"""Study-level jobs (routes with inputs): ``jobs.inputs`` records a job's series by input name; a job may be
``waiting`` for its inputs (job states are stored as text, so the new state needs no change of type).

Revision ID: 0003_study_jobs
Revises: 0002_workers
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_study_jobs"
down_revision = "0002_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("inputs", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("inputs")
