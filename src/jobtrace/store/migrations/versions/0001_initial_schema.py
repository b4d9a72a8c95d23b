"""Initial schema: experiments, jobs, metrics (+ latest), spans, items, series, profiles.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Frozen copy of the schema at this revision: migrations are history and must not follow
# later edits of jobtrace.store.schema, which is why they do not import it.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", JSON_DOC, nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "ingested_batches",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("start_time", sa.Double(), nullable=True),
        sa.Column("duration", sa.Double(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=True),
        sa.Column("measurements", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_type", sa.String(length=256), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("memory_peak_kb", sa.Double(), nullable=True),
        sa.Column("info", JSON_DOC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_items_job_id_status", "items", ["job_id", "status"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=True),
        sa.Column("experiment", sa.String(length=256), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_time", sa.Double(), nullable=False),
        sa.Column("end_time", sa.Double(), nullable=True),
        sa.Column("duration", sa.Double(), nullable=True),
        sa.Column("peak_memory_kb", sa.BigInteger(), nullable=True),
        sa.Column("cpu_user", sa.Double(), nullable=True),
        sa.Column("cpu_sys", sa.Double(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_type", sa.String(length=256), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("host", sa.String(length=256), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("argv", JSON_DOC, nullable=True),
        sa.Column("tags", JSON_DOC, nullable=True),
        sa.Column("params", JSON_DOC, nullable=True),
        sa.Column("last_heartbeat", sa.Double(), nullable=True),
        sa.Column("heartbeat_interval", sa.Double(), nullable=True),
        sa.Column("report_dir", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_jobs_experiment_start_time", "jobs", ["experiment", "start_time"], unique=False
    )
    op.create_index("ix_jobs_start_time", "jobs", ["start_time"], unique=False)
    op.create_index("ix_jobs_status", "jobs", ["status"], unique=False)

    op.create_table(
        "metric_latest",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("special", sa.String(length=8), nullable=True),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name"),
    )
    op.create_table(
        "metrics",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("special", sa.String(length=8), nullable=True),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name", "step"),
    )
    op.create_table(
        "profiles",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_profiles_job_id", "profiles", ["job_id"], unique=False)

    op.create_table(
        "series",
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("special", sa.String(length=8), nullable=True),
        sa.Column("data", JSON_DOC, nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("source", "name", "labels"),
    )
    op.create_index("ix_series_name", "series", ["name"], unique=False)

    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.String(length=16), nullable=True),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("duration_ns", sa.BigInteger(), nullable=False),
        sa.Column("info", JSON_DOC, nullable=True),
        sa.Column("error_type", sa.String(length=256), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("host", sa.String(length=256), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("thread", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("trace_id", "span_id"),
    )
    op.create_index("ix_spans_job_id", "spans", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_spans_job_id", table_name="spans")

    op.drop_table("spans")
    op.drop_index("ix_series_name", table_name="series")

    op.drop_table("series")
    op.drop_index("ix_profiles_job_id", table_name="profiles")

    op.drop_table("profiles")
    op.drop_table("metrics")
    op.drop_table("metric_latest")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_index("ix_jobs_start_time", table_name="jobs")
    op.drop_index("ix_jobs_experiment_start_time", table_name="jobs")

    op.drop_table("jobs")
    op.drop_index("ix_items_job_id_status", table_name="items")

    op.drop_table("items")
    op.drop_table("ingested_batches")
    op.drop_table("experiments")
