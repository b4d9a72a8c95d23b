"""Jobs: ``traceback``, the formatted traceback of the exception a failed job ended with.

Text, innermost frames last; a long one keeps its end (where the error is) behind a marker
line (see :func:`jobtrace.limits.cap_text_tail`). NULL for a job that did not fail with an
exception.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("traceback", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("traceback")
