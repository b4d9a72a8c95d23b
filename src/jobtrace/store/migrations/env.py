"""Alembic environment for jobtrace's store.

jobtrace always runs migrations through :func:`jobtrace.store.migrate.upgrade`, which hands
in a connection that already holds the store's migration lock; this module only binds
Alembic to it.
"""

from __future__ import annotations

from alembic import context

from jobtrace.store.schema import metadata
from jobtrace.store.versions import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI by hand
    raise RuntimeError("run jobtrace's migrations with `jobtrace db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
