"""SQLAlchemy engines for store URLs, tuned for many concurrent writers.

SQLite: WAL journal, ``synchronous=NORMAL`` and a busy timeout, with every write
transaction taking the write lock up front (``BEGIN IMMEDIATE``). A deferred transaction
that reads and then writes fails with "database is locked" at once whatever the busy timeout,
because SQLite cannot upgrade its read snapshot; taking the lock first makes writers queue.
PostgreSQL: psycopg 3 with a pre-ping pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event

from jobtrace.errors import ConfigurationError

#: Seconds a SQLite writer waits in SQLite's own busy handler before the writer retries.
SQLITE_BUSY_TIMEOUT = 30.0


def json_dumps(value: Any) -> str:
    # orjson is ~10x faster than json for the dicts in span info and job tags; it rejects
    # what it cannot encode, so fall back to repr() rather than fail a whole batch.
    return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:///…`` URL."""
    return Path(url.split("://", 1)[1][1:].split("?", 1)[0])


def create_engine(url: str) -> sa.Engine:
    """Create an engine for a ``sqlite:///`` or ``postgresql://`` store URL."""
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = sqlite_path(url)
        engine = sa.create_engine(
            f"sqlite:///{path}",
            json_serializer=json_dumps,
            json_deserializer=orjson.loads,
            connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT,
                # sqlite3 opens a transaction before INSERT/UPDATE/DELETE with this exact
                # BEGIN statement; reads stay outside transactions and never take the lock.
                "isolation_level": "IMMEDIATE",
                "check_same_thread": False,
            },
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        rest = url.split("://", 1)[1]
        return sa.create_engine(
            f"postgresql+psycopg://{rest}",
            json_serializer=json_dumps,
            json_deserializer=orjson.loads,
            pool_pre_ping=True,
            # Fail fast when the server is unreachable: the recorder spools and retries.
            connect_args={"connect_timeout": 10},
        )
    raise ConfigurationError(f"{url!r} is not a database URL (sqlite:/// or postgresql://)")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    try:
        # journal_mode=WAL is persistent in the file, so this is a no-op after the first time.
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # 64 MiB of page cache keeps index pages of random-keyed inserts (span ids) in memory.
        cursor.execute("PRAGMA cache_size=-65536")
    finally:
        cursor.close()
