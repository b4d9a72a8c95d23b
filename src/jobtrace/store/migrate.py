"""Versioned schema migrations (Alembic), applied on first use and by `jobtrace db upgrade`.

Opening a store checks the recorded revision with one cheap query and only imports Alembic
when the store is behind. Migrations run under a lock — ``BEGIN IMMEDIATE`` on SQLite, a
transaction-scoped advisory lock on PostgreSQL — so many processes opening a new store at
once migrate it exactly once: the others wait, then find it current.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from jobtrace.errors import StoreError
from jobtrace.store.versions import HEAD, VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# An arbitrary constant: the advisory-lock key that serialises jobtrace migrations on PostgreSQL.
_PG_LOCK_KEY = 0x6A6F6274


def current_revision(conn: sa.Connection) -> str | None:
    """The store's revision, or ``None`` for an empty store."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    row = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").first()
    return None if row is None else str(row[0])


def _alembic_config(conn: sa.Connection) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    return config


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")


def upgrade(engine: sa.Engine, revision: str = "head") -> str:
    """Bring the store to ``revision`` (default: the newest) and return the revision reached."""
    with engine.connect() as conn:
        found = current_revision(conn)
        conn.rollback()
        if found == HEAD and revision == "head":
            return found
        if found is not None and found != HEAD and not found.isdigit():
            raise StoreError(f"store schema is at unknown revision {found!r}")
        if found is not None and found.isdigit() and int(found) > int(HEAD):
            raise StoreError(
                f"store schema is at revision {found}, newer than this jobtrace ({HEAD}); "
                "upgrade jobtrace to use this store"
            )
        from alembic import command

        _lock(conn)
        command.upgrade(_alembic_config(conn), revision)  # type: ignore[arg-type]
        reached = current_revision(conn)
        conn.commit()
    return reached or ""
