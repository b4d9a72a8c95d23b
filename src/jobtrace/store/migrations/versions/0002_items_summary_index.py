"""Items: one covering index for batch summaries replaces the (job_id, status) index.

The new index leads with the same two columns, so listing a batch's items (by status or not)
uses it as before; its extra columns let a summary (counts, sums, min/max, and the median
as an ordered walk of durations) read the index alone instead of sorting a million rows.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = ["job_id", "status", "duration", "samples", "measurements", "bytes"]


def upgrade() -> None:
    op.create_index("ix_items_job_id_status_duration", "items", _COLUMNS, unique=False)
    op.drop_index("ix_items_job_id_status", table_name="items")


def downgrade() -> None:
    op.create_index("ix_items_job_id_status", "items", ["job_id", "status"], unique=False)
    op.drop_index("ix_items_job_id_status_duration", table_name="items")
