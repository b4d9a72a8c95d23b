"""SQLite connections tuned for many concurrent writers, without SQLAlchemy.

WAL journal, ``synchronous=NORMAL``, a large page cache and a busy timeout; and every
write transaction takes the write lock up front (``BEGIN IMMEDIATE``, which sqlite3 issues
itself before the first INSERT when ``isolation_level="IMMEDIATE"``). A deferred transaction
that reads and then writes fails with "database is locked" at once whatever the busy
timeout, because SQLite cannot upgrade its read snapshot; taking the lock first makes
writers queue instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from jobtrace.store.versions import VERSION_TABLE

#: Seconds a writer waits in SQLite's own busy handler before the writer retries itself.
BUSY_TIMEOUT = 30.0
#: sqlite3's keyword arguments for every connection jobtrace opens.
CONNECT_ARGS: dict[str, Any] = {
    "timeout": BUSY_TIMEOUT,
    # sqlite3 opens a transaction before INSERT/UPDATE/DELETE with this exact BEGIN
    # statement; reads stay outside transactions and never take the write lock.
    "isolation_level": "IMMEDIATE",
    "check_same_thread": False,
}


def path_of(url: str) -> Path:
    """The database file of a ``sqlite:///…`` URL."""
    return Path(url.split("://", 1)[1][1:].split("?", 1)[0])


def tune(conn: Any) -> None:
    """Apply jobtrace's pragmas to a DB-API sqlite3 connection."""
    cursor = conn.cursor()
    try:
        # journal_mode=WAL is persistent in the file, so this is a no-op after the first time.
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # 64 MiB of page cache keeps index pages of random-keyed inserts in memory.
        cursor.execute("PRAGMA cache_size=-65536")
    finally:
        cursor.close()


def connect(path: Path) -> sqlite3.Connection:
    conn: sqlite3.Connection = sqlite3.connect(path, **CONNECT_ARGS)
    try:
        tune(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def revision(conn: sqlite3.Connection) -> str | None:
    """The schema revision recorded in the file, or None for a store not yet migrated."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (VERSION_TABLE,)
    ).fetchone()
    if row is None:
        return None
    found = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    return None if found is None else str(found[0])


def is_locked(exc: BaseException | None) -> bool:
    """True when ``exc`` is SQLite saying another connection holds the lock (worth a retry
    with jitter: its busy handler is unfair, and does not cover every step)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text
