"""Spans: ``service``, the name of the service (process role) that ran each span.

Set from ``jobtrace.configure(service=...)`` or ``JOBTRACE_SERVICE``, else the name of the
job the process runs, else its script's; searched by ``jobtrace trace list --service``.
NULL for spans recorded before this column existed. The index on (service, trace_id) lists
a service's traces newest first, so those searches stop at the page's last match instead
of walking every span.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("spans", sa.Column("service", sa.String(256), nullable=True))
    op.create_index("ix_spans_service_trace_id", "spans", ["service", "trace_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_spans_service_trace_id", table_name="spans")
    with op.batch_alter_table("spans") as batch:
        batch.drop_column("service")
