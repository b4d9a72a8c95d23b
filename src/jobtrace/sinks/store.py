"""``sqlite:///…`` and ``postgresql://…``: write into a jobtrace store.

The SQLite sink runs on ``sqlite3`` alone, for a store at the current schema revision and
for a new one (:mod:`jobtrace.store.bootstrap`); SQLAlchemy and Alembic are imported only
to migrate a store made by an older jobtrace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jobtrace.errors import StoreError
from jobtrace.model import Record
from jobtrace.store.writer import BatchWriter


class StoreSink:
    """Opens (and if needed migrates) the store on construction, then writes batches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store = None
        if url.split("://", 1)[0].lower() == "sqlite":
            self.writer: BatchWriter = _open_sqlite(url)
        else:
            from jobtrace.store.core import Store
            from jobtrace.store.writer import PostgresWriter

            store = self._store = Store(url)
            self.writer = PostgresWriter(store.engine)

    def write(self, records: Sequence[Record]) -> None:
        try:
            self.writer.write(records)
        except StoreError:
            raise
        except Exception as exc:
            from jobtrace.store.core import describe_error

            # The recorder's message already names the (masked) URL.
            raise StoreError(describe_error(exc)) from exc

    def close(self) -> None:
        self.writer.close()
        if self._store is not None:
            self._store.close()

    def after_fork(self) -> None:
        """Forget inherited connections without closing the parent's.

        SQLite must not see a connection used across ``fork``: even closing it in the child
        could disturb the parent's. The child keeps a reference so it is never collected.
        """
        _inherited.append(self.writer)
        if self._store is not None:
            self._store.engine.dispose(close=False)


_inherited: list[BatchWriter] = []


def _open_sqlite(url: str) -> BatchWriter:
    import random
    import time

    from jobtrace.store import sqlite

    path = sqlite.path_of(url)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
    # Processes starting together on a new file race to set it up: the busy handler does
    # not cover every step (switching to WAL, say), so a lock is retried with jitter.
    for attempt in range(_OPEN_RETRIES):
        try:
            return _open_sqlite_once(url, path)
        except StoreError as exc:
            if not sqlite.is_locked(exc.__cause__) or attempt == _OPEN_RETRIES - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


_OPEN_RETRIES = 10


def _open_sqlite_once(url: str, path: Path) -> BatchWriter:
    import sqlite3

    from jobtrace.store import bootstrap, sqlite
    from jobtrace.store.versions import HEAD
    from jobtrace.store.writer import SQLiteWriter

    try:
        # One connection checks the revision and, when it is current (every run but a
        # store's first), goes on to write. Closing it to open another would cost a
        # second open, and the close (the last connection's) would delete the WAL file
        # just for the next connection to create it again. A new file gets its schema
        # here too, without SQLAlchemy and Alembic (see jobtrace.store.bootstrap).
        conn = sqlite.connect(path)
        try:
            current = sqlite.revision(conn)
            if current == HEAD or (current is None and bootstrap.create_schema(conn)):
                return SQLiteWriter(path, conn)
        except BaseException:
            conn.close()
            raise
        conn.close()
        from jobtrace.store.core import Store

        Store(url).close()  # migrates the store (or says why it cannot), once
        return SQLiteWriter(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {url}: {exc}") from exc
