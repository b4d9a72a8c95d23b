"""Schema revision bookkeeping shared by the migration runner and the light SQLite path."""

from __future__ import annotations

#: Alembic's bookkeeping table, named so it cannot collide with a user's own Alembic setup
#: when jobtrace shares a PostgreSQL database with an application.
VERSION_TABLE = "jobtrace_schema_version"
#: The newest revision under ``migrations/versions``; a test keeps it equal to Alembic's head.
HEAD = "0007"
