"""The baseline: the index schema of the last release made without migrations.

A database that release created (its tables, no ``alembic_version``) is recognised as this revision and
stamped with it; a new database starts here. Never edit this file: add a revision after the newest one.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_received_tables()
    _create_job_tables()
    _create_delivery_tables()
    _create_event_tables()


def _create_received_tables() -> None:
    """The received instances: studies, their series and the instances' files."""
    op.create_table("studies",
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("first_received_at", sa.DateTime(), nullable=False),
        sa.Column("last_received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("study_uid")
    )
    op.create_table("series",
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("state", sa.Enum(
            "receiving", "complete", "routed", "unrouted",
            name="seriesstate", native_enum=False, length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("called_ae_title", sa.String(length=16), nullable=True),
        sa.Column("calling_host", sa.String(length=64), nullable=True),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("first_received_at", sa.DateTime(), nullable=False),
        sa.Column("last_received_at", sa.DateTime(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["study_uid"], ["studies.study_uid"]),
        sa.PrimaryKeyConstraint("series_uid")
    )
    op.create_index(op.f("ix_series_last_received_at"), "series", ["last_received_at"], unique=False)
    op.create_index(op.f("ix_series_state"), "series", ["state"], unique=False)
    op.create_index(op.f("ix_series_study_uid"), "series", ["study_uid"], unique=False)
    op.create_table("instances",
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("called_ae_title", sa.String(length=16), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["series_uid"], ["series.series_uid"]),
        sa.PrimaryKeyConstraint("sop_instance_uid")
    )
    op.create_index(op.f("ix_instances_series_uid"), "instances", ["series_uid"], unique=False)


def _create_job_tables() -> None:
    """Jobs and the result objects they write."""
    op.create_table("jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("routes", sa.JSON(), nullable=False),
        sa.Column("destinations", sa.JSON(), nullable=False),
        sa.Column("state", sa.Enum(
            "queued", "running", "retrying", "succeeded", "failed",
            name="jobstate", native_enum=False, length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("run_count", sa.Integer(), nullable=False),
        sa.Column("celery_task_id", sa.String(length=64), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["series_uid"], ["series.series_uid"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("series_uid", "pipeline", name="uq_job_series_pipeline")
    )
    op.create_index(op.f("ix_jobs_series_uid"), "jobs", ["series_uid"], unique=False)
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"], unique=False)
    op.create_table("result_objects",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "kind", name="uq_result_job_kind")
    )
    op.create_index(op.f("ix_result_objects_job_id"), "result_objects", ["job_id"], unique=False)


def _create_delivery_tables() -> None:
    """The outbox and the SOP classes destinations refused."""
    op.create_table("deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("result_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("state", sa.Enum(
            "pending", "sending", "delivered", "failed", "replaced",
            name="deliverystate", native_enum=False, length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("sending_since", sa.DateTime(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["result_id"], ["result_objects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("result_id", "destination", name="uq_delivery_result_destination")
    )
    op.create_index(op.f("ix_deliveries_result_id"), "deliveries", ["result_id"], unique=False)
    op.create_index(op.f("ix_deliveries_state"), "deliveries", ["state"], unique=False)
    op.create_table("destination_refusals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("first_refused_at", sa.DateTime(), nullable=False),
        sa.Column("last_refused_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("destination", "sop_class_uid", name="uq_refusal_destination_class")
    )
    op.create_index(op.f("ix_destination_refusals_destination"), "destination_refusals", ["destination"], unique=False)


def _create_event_tables() -> None:
    """Errors shown by `pacsnode status`, and the audit trail."""
    op.create_table("events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("uid", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_events_at"), "events", ["at"], unique=False)
    op.create_table("audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(length=48), nullable=False),
        sa.Column("association_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("source_ae_title", sa.String(length=16), nullable=True),
        sa.Column("source_host", sa.String(length=64), nullable=True),
        sa.Column("destination_ae_title", sa.String(length=16), nullable=True),
        sa.Column("destination_host", sa.String(length=64), nullable=True),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("series_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_instance_uids", sa.JSON(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"], unique=False)
    op.create_index(op.f("ix_audit_events_event"), "audit_events", ["event"], unique=False)
    op.create_index(op.f("ix_audit_events_study_uid"), "audit_events", ["study_uid"], unique=False)


def downgrade() -> None:
    raise NotImplementedError("0001_baseline is the oldest schema: there is nothing to downgrade to")
