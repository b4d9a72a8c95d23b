"""Encrypted report bundles uploaded by clients at a job's end.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_bundles",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_report_bundles_job_id", "report_bundles", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_report_bundles_job_id", table_name="report_bundles")
    op.drop_table("report_bundles")
