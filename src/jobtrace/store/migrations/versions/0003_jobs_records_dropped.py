"""Jobs: ``records_dropped``, the job's records the recorder had to drop, by kind.

A JSON object such as ``{"metric": 120, "span": 4}`` (NULL when nothing was dropped): the
recorder drops records only when its spool is full or the disk refuses, and a job that
lost records must say so.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_doc = sa.JSON().with_variant(JSONB(), "postgresql")
    op.add_column("jobs", sa.Column("records_dropped", json_doc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("records_dropped")
