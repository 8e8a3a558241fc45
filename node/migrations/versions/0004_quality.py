"""Quality monitoring: runs, measurements, references, scores and drift checks (tables ``quality_*``).

Revision ID: 0004_quality
Revises: 0003_study_jobs
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_quality"
down_revision = "0003_study_jobs"
branch_labels = None
depends_on = None

UID = sa.String(length=64)


def upgrade() -> None:
    _runs_and_measurements()
    _references_and_scores()
    _drift()


def _indexes(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column], unique=False)


def _runs_and_measurements() -> None:
    op.create_table(
        "quality_runs",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("pipeline_version", sa.String(length=64), nullable=False),
        sa.Column("series_uid", UID, nullable=False),
        sa.Column("refused", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )
    _indexes("quality_runs", "pipeline", "series_uid", "recorded_at")
    op.create_table(
        "quality_measurements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("pipeline_version", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("category", sa.String(length=128), nullable=True),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "name", name="uq_quality_measurement_job_name"),
    )
    _indexes("quality_measurements", "job_id", "pipeline", "recorded_at")


def _references_and_scores() -> None:
    op.create_table(
        "quality_references",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("series_uid", UID, nullable=False),
        sa.Column("referenced_series_uid", UID, nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("scored_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid"),
    )
    _indexes("quality_references", "series_uid", "referenced_series_uid", "state")
    op.create_table(
        "quality_scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("reference_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("pipeline_version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("dice", sa.Float(), nullable=True),
        sa.Column("hd95_mm", sa.Float(), nullable=True),
        sa.Column("volume_ml", sa.Float(), nullable=True),
        sa.Column("reference_volume_ml", sa.Float(), nullable=True),
        sa.Column("predicted", sa.String(length=128), nullable=True),
        sa.Column("reference_value", sa.String(length=128), nullable=True),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.ForeignKeyConstraint(["reference_id"], ["quality_references.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference_id", "job_id", "kind", "name", name="uq_quality_score"),
    )
    _indexes("quality_scores", "reference_id", "job_id", "pipeline", "scored_at")


def _drift() -> None:
    op.create_table(
        "quality_drift",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("pipeline_version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=160), nullable=False),
        sa.Column("statistic", sa.Float(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("baseline_count", sa.Integer(), nullable=False),
        sa.Column("recent_count", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _indexes("quality_drift", "pipeline", "flagged")


def downgrade() -> None:
    for table in ("quality_drift", "quality_scores", "quality_references", "quality_measurements", "quality_runs"):
        op.drop_table(table)
