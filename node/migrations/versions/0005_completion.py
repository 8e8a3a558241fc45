"""Series completion from evidence: ``series_associations`` holds which associations carried a series still
being assembled and how each ended; a series records the rule that declared it complete and how often it was
reopened; a study when it was complete; a job how many instances its last run read (its next report says what
it replaces).

Revision ID: 0005_completion
Revises: 0004_quality
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_completion"
down_revision = "0004_quality"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "series_associations",
        sa.Column("association_id", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("first_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.Enum("released", "aborted", "interrupted", name="associationoutcome",
                                     native_enum=False, length=16), nullable=True),
        sa.PrimaryKeyConstraint("association_id", "series_uid"),
    )
    op.create_index(op.f("ix_series_associations_series_uid"), "series_associations", ["series_uid"], unique=False)
    # Plain ADD COLUMN (a constant default fills the rows there are): SQLite keeps the table and its references.
    op.add_column("series", sa.Column("completed_by", sa.Enum("association", "declared", "quiet",
                                                              name="completionrule", native_enum=False, length=16),
                                      nullable=True))
    op.add_column("series", sa.Column("reopen_count", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("series", sa.Column("reopened_at", sa.DateTime(), nullable=True))
    op.add_column("studies", sa.Column("completed_at", sa.DateTime(), nullable=True))
    op.add_column("jobs", sa.Column("source_instances", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("source_instances")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("completed_at")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("reopened_at")
        batch.drop_column("reopen_count")
        batch.drop_column("completed_by")
    op.drop_index(op.f("ix_series_associations_series_uid"), table_name="series_associations")
    op.drop_table("series_associations")
