"""Writing record batches into the store: one transaction per batch, idempotent upserts.

Every statement is an upsert keyed on the record's identity, so writing the same batch twice
(a replayed spool, a retried HTTP request) changes nothing. Statements are compiled by
SQLAlchemy once per dialect and executed through the DB-API driver directly: SQLAlchemy's
per-row parameter processing would otherwise cost more than SQLite's own work.

- SQLite: ``executemany`` inside one ``BEGIN IMMEDIATE`` transaction.
- PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT``
  per table. PostgreSQL refuses to update one row twice in one statement, so batches are
  reduced to one row per key first.
"""

from __future__ import annotations

import math
import operator
import random
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from jobtrace import model
from jobtrace.errors import StoreError
from jobtrace.store import schema
from jobtrace.store.engine import json_dumps

# SQLite's busy handler is unfair under contention (median wait 2 ms, worst over a second),
# so after it gives up we retry the whole transaction with jittered backoff.
_LOCK_RETRIES = 20

Row = tuple[Any, ...]


class _TablePlan:
    """How one record kind becomes rows of one table, and the statement that writes them."""

    def __init__(
        self,
        kind: str,
        table: sa.Table,
        *,
        update: bool = True,
        newer: str | None = None,
        reduce: bool = False,
        dialect: sa.Dialect,
    ) -> None:
        self.table = table
        self.columns = [c.name for c in table.columns]
        fields = model.FIELDS[kind]
        # Each column reads one record position; `special` reads the value and is fixed up.
        self._special = self.columns.index("special") if "special" in self.columns else None
        source_names = ["value" if c == "special" else c for c in self.columns]
        missing = [c for c in source_names if c not in fields]
        if missing:
            raise StoreError(f"{table.name} columns {missing} have no {kind} record field")
        self._get = operator.itemgetter(*[fields.index(c) + 1 for c in source_names])
        self._json = tuple(i for i, c in enumerate(table.columns) if isinstance(c.type, sa.JSON))
        self._value = self.columns.index("value") if self._special is not None else None
        keys = [c.name for c in table.primary_key.columns]
        self._key = operator.itemgetter(*[self.columns.index(k) for k in keys])
        self.update = update
        self.always_reduce = reduce
        self.newer_index = self.columns.index(newer) if newer else None

        insert: Any = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        if dialect.name == "postgresql":
            source = sa.table(f"_jt_{table.name}", *[sa.column(c) for c in self.columns])
            stmt = insert(table).from_select(self.columns, sa.select(source))
        else:
            stmt = insert(table)
        if update:
            set_ = {c: stmt.excluded[c] for c in self.columns if c not in keys}
            where = table.c[newer] <= stmt.excluded[newer] if newer else None
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=set_, where=where)
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=keys)
        self.sql = str(stmt.compile(dialect=dialect))

    def rows(self, records: Sequence[model.Record], reduce: bool) -> list[Row]:
        rows: list[Row] = list(map(self._get, records))
        if self._json or self._special is not None:
            rows = list(map(self._fix, rows))
        if self.update and (reduce or self.always_reduce):
            rows = self._reduce(rows)
        return rows

    def _fix(self, row: Row) -> Row:
        out = list(row)
        for i in self._json:
            if out[i] is not None:
                out[i] = json_dumps(out[i])
        special, value = self._special, self._value
        if special is not None and value is not None:
            v = out[value]
            if v is None or math.isfinite(v):
                out[special] = None
            else:
                out[value], out[special] = model.split_float(v)
        return tuple(out)

    def _reduce(self, rows: list[Row]) -> list[Row]:
        """One row per key: the later row wins, unless its ``newer`` column is smaller.

        Needed on PostgreSQL, which refuses to update one row twice in one statement (SQLite
        applies an ``executemany`` row by row and reaches the same result), and worth it
        everywhere for tables like ``metric_latest`` where a batch holds many rows per key.
        """
        key, newer = self._key, self.newer_index
        kept: dict[Any, Row] = {}
        for row in rows:
            k = key(row)
            old = kept.get(k)
            if old is None or newer is None or old[newer] <= row[newer]:
                kept[k] = row
        return list(kept.values()) if len(kept) < len(rows) else rows


class StoreWriter:
    """Writes record batches into one engine's store."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        d = engine.dialect

        def plan(kind: str, table: sa.Table, **kw: Any) -> _TablePlan:
            return _TablePlan(kind, table, dialect=d, **kw)

        # Order matters only for readability of a half-written batch: there are no foreign
        # keys, so a metric may arrive before its job.
        self._plans: list[tuple[str, _TablePlan]] = [
            (model.EXPERIMENT, plan(model.EXPERIMENT, schema.experiments)),
            # A job snapshot replaces the stored one only if it is at least as new.
            (model.JOB, plan(model.JOB, schema.jobs, newer="seq", reduce=True)),
            (model.METRIC, plan(model.METRIC, schema.metrics)),
            (model.METRIC, plan(model.METRIC, schema.metric_latest, newer="step", reduce=True)),
            (model.SPAN, plan(model.SPAN, schema.spans, update=False)),
            (model.ITEM, plan(model.ITEM, schema.items, update=False)),
            (model.SERIES, plan(model.SERIES, schema.series, newer="updated_at", reduce=True)),
            (model.PROFILE, plan(model.PROFILE, schema.profiles, update=False)),
        ]
        self._job_experiment = plan(model.EXPERIMENT, schema.experiments, update=False)
        self._batch_sql = str(
            (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(
                schema.ingested_batches
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .compile(dialect=d)
        )

    def write(self, records: Sequence[model.Record], batch_id: str | None = None) -> bool:
        """Write ``records`` in one transaction; False if ``batch_id`` was already stored."""
        by_kind: dict[str, list[model.Record]] = {}
        for rec in records:
            if rec[0] not in model.FIELDS:
                raise StoreError(f"unknown record kind {rec[0]!r}")
            by_kind.setdefault(rec[0], []).append(rec)
        jobs = by_kind.get(model.JOB, ())
        experiments = {r[4]: r[6] for r in jobs if r[4] is not None}
        if experiments:
            # Jobs name their experiment; make sure it exists without touching its fields.
            by_kind["_job_experiment"] = [
                (model.EXPERIMENT, name, None, None, created)
                for name, created in experiments.items()
            ]
        reduce = self._dialect == "postgresql"
        work = [(p, p.rows(by_kind[k], reduce)) for k, p in self._plans if k in by_kind]
        if "_job_experiment" in by_kind:
            rows = self._job_experiment.rows(by_kind["_job_experiment"], reduce)
            work.insert(0, (self._job_experiment, rows))
        write_tables = self._write_pg if self._dialect == "postgresql" else self._write_sqlite
        for attempt in range(_LOCK_RETRIES):
            try:
                return write_tables(work, batch_id, len(records))
            except Exception as exc:
                if not _is_locked(exc) or attempt == _LOCK_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _batch_row(self, batch_id: str, count: int) -> Any:
        row = {"id": batch_id, "received_at": time.time(), "records": count}
        return row if self._dialect == "postgresql" else tuple(row.values())

    def _write_sqlite(
        self, work: list[tuple[_TablePlan, list[Row]]], batch_id: str | None, count: int
    ) -> bool:
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                # The first statement writes, so sqlite3 opens the transaction with
                # BEGIN IMMEDIATE and the write lock is held before anything is read.
                if batch_id is not None:
                    cur.execute(self._batch_sql, self._batch_row(batch_id, count))
                    if cur.rowcount == 0:
                        raw.rollback()
                        return False
                for plan, rows in work:
                    cur.executemany(plan.sql, rows)
                raw.commit()
                return True
            except BaseException:
                raw.rollback()
                raise
            finally:
                cur.close()
        finally:
            raw.close()

    def _write_pg(
        self, work: list[tuple[_TablePlan, list[Row]]], batch_id: str | None, count: int
    ) -> bool:
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                if batch_id is not None:
                    cur.execute(self._batch_sql, self._batch_row(batch_id, count))
                    if cur.rowcount == 0:
                        raw.rollback()
                        return False
                for plan, rows in work:
                    tmp = f"_jt_{plan.table.name}"
                    cols = ", ".join(plan.columns)
                    # The temp table lives as long as the pooled connection and empties
                    # itself at every commit, so it is created once per connection.
                    cur.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS {tmp} "
                        f"(LIKE {plan.table.name}) ON COMMIT DELETE ROWS"
                    )
                    with cur.copy(f"COPY {tmp} ({cols}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(plan.sql)
                raw.commit()
                return True
            except BaseException:
                raw.rollback()
                raise
            finally:
                cur.close()
        finally:
            raw.close()


def _is_locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text
