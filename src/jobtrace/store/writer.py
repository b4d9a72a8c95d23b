"""Writing record batches into the store: one transaction per batch, idempotent upserts.

Every statement is an upsert keyed on the record's identity, so writing the same batch twice
(a replayed spool, a retried HTTP request) changes nothing. The statements are built here
from :data:`PLANS` — plain data that a test keeps identical to :mod:`jobtrace.store.schema`
— and run through the DB-API driver directly, so the SQLite path never imports SQLAlchemy
(its import alone would cost a recorded job a few hundred milliseconds of GIL time), and
neither path pays SQLAlchemy's per-row parameter processing.

- SQLite: ``executemany`` inside one ``BEGIN IMMEDIATE`` transaction.
- PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT``
  per table. PostgreSQL refuses to update one row twice in one statement, so batches are
  reduced to one row per key first.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from jobtrace import limits, model
from jobtrace.errors import StoreError, one_line
from jobtrace.sinks import count_refused
from jobtrace.store import sqlite

log = logging.getLogger("jobtrace.store")

# SQLite's busy handler is unfair under contention (median wait 2 ms, worst over a second),
# so after it gives up we retry the whole transaction with jittered backoff.
_LOCK_RETRIES = 20
# PostgreSQL: new connections tried after one died mid-transaction, before giving up.
_RECONNECTS = 2

Row = tuple[Any, ...]


class Refusal(NamedTuple):
    """A record the database refused: its position in the batch and the database's reason."""

    position: int
    message: str


class PartialWrite(NamedTuple):
    """What :meth:`BatchWriter.write_partial` did."""

    #: False: the batch id was stored before, so nothing was written now.
    stored: bool
    #: The records left out because the database refused them, by position in the batch.
    refused: list[Refusal]


class RecordsRefused(StoreError):
    """The database refused records of an all-or-nothing batch; nothing of it was stored."""

    def __init__(self, refused: list[Refusal]) -> None:
        first = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        super().__init__(f"the store refused record {first.position}: {first.message}{more}")
        self.refused = refused


_unserialisable_seen: set[str] = set()


def _as_repr(value: Any) -> str:
    """orjson's fallback: store the repr, and say so once per type."""
    name = type(value).__qualname__
    if name not in _unserialisable_seen:
        _unserialisable_seen.add(name)
        log.warning("jobtrace: %s values are not JSON-serialisable; stored as their repr", name)
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {name}>"


def json_dumps(value: Any) -> str:
    """JSON text for JSON columns, bounded (:func:`jobtrace.limits.doc_dumper`); what JSON
    cannot hold is stored as its repr."""
    return _dump_doc(value)


_dump_doc = limits.doc_dumper(_as_repr)


class TableSpec(NamedTuple):
    """How one record kind is written into one table."""

    table: str
    kind: str
    keys: tuple[str, ...]
    #: Columns holding JSON documents (serialised here, not by a driver adapter).
    json: tuple[str, ...] = ()
    #: Upsert: True updates the row, False keeps the first row written.
    update: bool = True
    #: A column that must not decrease: an update applies only if it is at least as large.
    newer: str | None = None
    #: Reduce each batch to one row per key before writing on SQLite too (PostgreSQL always
    #: needs it, see the module docstring): worth it where a batch holds many rows per key.
    reduce: bool = False
    #: The record's ``value`` is split into ``value`` and ``special`` (NaN/±Inf) columns.
    special: bool = False
    #: The value is never None, so SQLite can split it in SQL (it binds NaN as NULL),
    #: sparing a Python fix-up per row.
    special_in_sql: bool = False
    #: Id columns the hot path leaves as ints, written as fixed-width hex: (column, format).
    hex_ids: tuple[tuple[str, str], ...] = ()


#: Every table the writer fills, in write order. There are no foreign keys, so order only
#: makes a half-read batch easier to reason about.
PLANS: tuple[TableSpec, ...] = (
    TableSpec("experiments", model.EXPERIMENT, ("name",), json=("tags",)),
    # A job snapshot replaces the stored one only if it is at least as new.
    TableSpec(
        "jobs",
        model.JOB,
        ("id",),
        json=("argv", "tags", "params", "records_dropped"),
        newer="seq",
    ),
    TableSpec(
        "metrics", model.METRIC, ("job_id", "name", "step"), special=True, special_in_sql=True
    ),
    TableSpec(
        "metric_latest",
        model.METRIC,
        ("job_id", "name"),
        newer="step",
        reduce=True,
        special=True,
        special_in_sql=True,
    ),
    TableSpec(
        "spans",
        model.SPAN,
        ("trace_id", "span_id"),
        json=("info",),
        update=False,
        hex_ids=model.SPAN_HEX_IDS,
    ),
    TableSpec("items", model.ITEM, ("id",), json=("info",), update=False),
    TableSpec(
        "series",
        model.SERIES,
        ("source", "name", "labels"),
        json=("data",),
        newer="updated_at",
        special=True,
    ),
    TableSpec("profiles", model.PROFILE, ("id",), update=False),
)
#: Jobs name their experiment; this makes sure it exists without touching its fields.
JOB_EXPERIMENT = TableSpec("experiments", model.EXPERIMENT, ("name",), json=("tags",), update=False)
_BATCHES = TableSpec("ingested_batches", "", ("id",), update=False)
_BATCH_COLUMNS = ("id", "received_at", "records")


def _q(name: str) -> str:
    return f'"{name}"'  # quoted: `timestamp`, `type`, `bytes` are keywords somewhere


def _conflict_clause(spec: TableSpec, columns: Sequence[str]) -> str:
    keys = ", ".join(map(_q, spec.keys))
    if not spec.update:
        return f"ON CONFLICT ({keys}) DO NOTHING"
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in columns if c not in spec.keys)
    where = (
        f" WHERE {_q(spec.table)}.{_q(spec.newer)} <= excluded.{_q(spec.newer)}"
        if spec.newer
        else ""
    )
    return f"ON CONFLICT ({keys}) DO UPDATE SET {sets}{where}"


class TablePlan:
    """A :class:`TableSpec` made executable: row building and the SQL for one dialect.

    Rows are built a column at a time (one C-level pass per column, not a Python call per
    row) and joined into tuples only as the driver consumes them. On SQLite a row has the
    record's own shape (kind first), with a ``special`` column appended when Python splits
    the value, and the statement's numbered parameters (``?2``, ``?3``, …) pick each column:
    a kind that needs no fix-up is bound as recorded, without building any row; otherwise
    only the record's tail from its first column to fix up (JSON documents, hex ids, a
    split value) is taken out and rebuilt (see :class:`_TailRows`). The driver binds every
    element of a row, referenced or not, so a record's own dicts and big ints must not stay
    in it. For PostgreSQL's COPY a row holds the table's columns in order.
    """

    def __init__(self, spec: TableSpec, dialect: str) -> None:
        self.spec = spec
        fields = model.FIELDS[spec.kind] if spec.kind else _BATCH_COLUMNS
        self.columns: list[str] = list(fields) + (["special"] if spec.special else [])
        in_sql = spec.special_in_sql and dialect == "sqlite"
        split = spec.special and not in_sql
        first = 1 if spec.kind else 0  # records start with their kind; batch claims do not
        record = {c: i + first for i, c in enumerate(fields)}  # positions in a record
        self._keys = operator.itemgetter(*[record[k] for k in spec.keys])
        self._newer = operator.itemgetter(record[spec.newer]) if spec.newer else None
        # Where each row position is read from in a record (a split `special` reads the value).
        self._sources: list[int]
        if dialect == "sqlite":
            self._sources = list(range(len(fields) + first))
            position = dict(record)
            if split:
                position["special"] = len(self._sources)
                self._sources.append(record["value"])
        else:
            self._sources = [record["value" if c == "special" else c] for c in self.columns]
            position = {c: i for i, c in enumerate(self.columns)}
        self._json = tuple(position[c] for c in spec.json)
        self._hex = tuple((position[c], fmt) for c, fmt in spec.hex_ids)
        self._special = position["special"] if split else None
        self._value = position["value"] if split else None
        fixed = {*self._json, *(i for i, _ in self._hex)}
        fixed |= {position["value"], position["special"]} if split else set()
        #: Rows are rebuilt from this position on (SQLite: the records' prefix before it is
        #: kept as is; PostgreSQL: 0). None: rows are the records as they are.
        self._tail: int | None = 0
        if dialect == "sqlite":
            self._tail = min(fixed) if fixed else None
            if self._tail == 1:
                self._tail = 0  # a column of kinds is cheaper than slicing each record
        cols = ", ".join(map(_q, self.columns))
        conflict = _conflict_clause(spec, self.columns)
        # One temporary table per plan: two plans may fill the same table in one transaction.
        self.temp_table = f"_jt_{spec.table}_{'upsert' if spec.update else 'insert'}"
        if dialect == "postgresql":
            # In key order: two servers upserting the same rows (one job's snapshots, its
            # latest metrics) then lock them in the same order, and cannot deadlock.
            order = ", ".join(map(_q, spec.keys))
            source = f"SELECT {cols} FROM {self.temp_table} ORDER BY {order}"
            self.sql = f"INSERT INTO {_q(spec.table)} ({cols}) {source} {conflict}"
        else:
            marks = [f"?{position[c] + 1}" for c in self.columns if c != "special" or split]
            if in_sql:
                v = marks[self.columns.index("value")]
                marks[self.columns.index("value")] = (
                    f"CASE WHEN abs({v}) = 9e999 THEN NULL ELSE {v} END"
                )
                marks.append(
                    f"CASE WHEN {v} IS NULL THEN 'nan' WHEN {v} = 9e999 THEN 'inf' "
                    f"WHEN {v} = -9e999 THEN '-inf' END"
                )
            values = ", ".join(marks)
            self.sql = f"INSERT INTO {_q(spec.table)} ({cols}) VALUES ({values}) {conflict}"
        self.copy_sql = f"COPY {self.temp_table} ({cols}) FROM STDIN"
        self.direct_copy_sql = f"COPY {_q(spec.table)} ({cols}) FROM STDIN"

    def rows(self, records: Sequence[model.Record], reduce: bool) -> Iterable[Row]:
        """The rows for ``records`` (an iterable that may be iterated again, for a retry)."""
        if self.spec.update and (reduce or self.spec.reduce):
            records = self._reduce(records)  # first: the fix-ups below are per row
        if not records:
            return ()
        tail = self._tail
        if tail is None:
            return records
        # A column at a time: zip(*records) would make an iterator per record, and 20,000
        # new objects set off the garbage collector, whose passes over the host's heap then
        # cost more than the whole transposition.
        columns: list[Sequence[Any]] = [
            list(map(operator.itemgetter(source), records)) for source in self._sources[tail:]
        ]
        for i, fmt in self._hex:
            columns[i - tail] = model.hex_ids(columns[i - tail], fmt)
        for i in self._json:
            columns[i - tail] = _json_column(columns[i - tail])
        special, value = self._special, self._value
        if special is not None and value is not None:
            columns[value - tail], columns[special - tail] = _split_column(columns[value - tail])
        return _TailRows(records, tail, columns)

    def _reduce(self, records: Sequence[model.Record]) -> Sequence[model.Record]:
        """One record per key: the one with the largest ``newer`` value, the later of
        equals (or simply the later record without ``newer``).

        Needed on PostgreSQL, which refuses to update one row twice in one statement (SQLite
        applies an ``executemany`` row by row and reaches the same result), and worth it
        everywhere for tables like ``metric_latest`` where a batch holds many rows per key.
        """
        # A stable sort keeps equal values in batch order, so the dict below (where the
        # last record of a key wins) keeps the largest, and the later of equals, as a
        # row-by-row upsert would.
        ordered = records if self._newer is None else sorted(records, key=self._newer)
        kept = dict(zip(map(self._keys, ordered), ordered, strict=True))
        return list(kept.values()) if len(kept) < len(records) else records


class _TailRows:
    """Rows made as they are iterated: each record's prefix up to ``tail`` (kept as
    recorded) followed by the rebuilt columns, ``record[:17] + (argv, tags, params, …)``.

    The driver binds each row as it is made and drops it, so a batch's rows never exist all
    at once: besides the memory, 20,000 new tuples alive together would set off the garbage
    collector every 700 of them, at a cost that grows with the host's heap.
    """

    __slots__ = ("_columns", "_records", "_tail")

    def __init__(
        self, records: Sequence[model.Record], tail: int, columns: list[Sequence[Any]]
    ) -> None:
        self._records = records
        self._tail = tail
        self._columns = columns

    @property
    def columns(self) -> list[Sequence[Any]]:
        """The rebuilt columns (on PostgreSQL, where ``tail`` is 0, every column)."""
        return self._columns if not self._tail else []

    def __iter__(self) -> Iterator[Row]:
        rows = zip(*self._columns, strict=True)
        if not self._tail:
            return rows
        prefixes = map(operator.itemgetter(slice(0, self._tail)), self._records)
        return map(operator.add, prefixes, rows)


def _json_column(column: Sequence[Any]) -> Sequence[Any]:
    """A JSON column's documents as text, None kept as None (NULL)."""
    if column.count(None) == len(column):
        return column
    try:
        # Without options first: a partial with keywords costs several times more per
        # call, and the options only add types (numpy, non-str keys) plain orjson refuses.
        # Each document is decoded as soon as it is made: holding thousands of orjson's
        # bytes objects at once costs far more than decoding them.
        documents: Sequence[Any] = list(map(bytes.decode, map(orjson.dumps, column)))
    except (TypeError, ValueError):
        return [None if v is None else json_dumps(v) for v in column]
    else:
        # The bounds of jobtrace.limits, as json_dumps keeps them: a few C-level passes
        # show whether any document may break one; only those are dumped again, bounded.
        if limits.any_may_break_bounds(documents):
            documents = [
                json_dumps(v) if limits.may_break_bounds(d) else d
                for v, d in zip(column, documents, strict=True)
            ]
    if None in column:  # a pass of its own only when needed: documents are rarely None
        documents = [None if v is None else d for v, d in zip(column, documents, strict=True)]
    return documents


def _split_column(column: Sequence[Any]) -> tuple[Sequence[Any], Sequence[Any]]:
    """(value, special) columns of a value column (see :func:`jobtrace.model.split_float`)."""
    n = len(column)
    try:
        # A finite sum means every value is finite (NaN and ±Inf propagate): the common
        # case costs one C-level pass. Otherwise only the non-finite values are visited.
        if math.isfinite(sum(column)):
            return column, (None,) * n
        finite = list(map(math.isfinite, column))
    except (TypeError, OverflowError):  # None values, huge ints: row by row
        finite = [v is None or math.isfinite(v) for v in column]
    values: list[Any] = list(column)
    specials: list[str | None] = [None] * n
    for i in itertools.compress(range(n), map(operator.not_, finite)):
        values[i], specials[i] = model.split_float(values[i])
    return values, specials


Work = list[tuple[TablePlan, Iterable[Row]]]


class BatchWriter:
    """Turns record batches into rows per table; subclasses run the SQL."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self._plans = [TablePlan(spec, self.dialect) for spec in PLANS]
        self._job_experiment = TablePlan(JOB_EXPERIMENT, self.dialect)
        self._batches = TablePlan(_BATCHES, self.dialect)

    rejected = 0
    #: Log at most this many rejected records per writer, then only count them.
    _REJECT_LOG_LIMIT = 20

    def write(self, records: Sequence[model.Record], batch_id: str | None = None) -> bool:
        """Write ``records`` in one transaction; False if ``batch_id`` was already stored.

        Every record is first bounded by :mod:`jobtrace.limits` (the same on every path into
        a store: text cut, NUL replaced, a record with an over-long key refused). A record
        refused there or by the database (a NUL character in a JSON document for
        PostgreSQL, a wrong type) must not take its whole batch down, nor make the sink
        look down and block the spool behind it: without a batch id the refused records
        are dropped, counted and logged, and the rest is written (see
        :meth:`write_partial`). A batch with an id (the server's strict ingest) is all or
        nothing instead: it raises :class:`RecordsRefused` naming the refused records.
        """
        if batch_id is None:
            result = self.write_partial(records)
            for refusal in result.refused:
                self._reject(records[refusal.position], refusal.message)
            return True
        kept, screened = self._screen(records)
        if screened:
            raise RecordsRefused(screened)
        try:
            return self._write_once(kept, batch_id)
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            refused = self.find_refused(kept, exc)
            if not refused:
                raise
            raise RecordsRefused(refused) from exc

    def write_partial(
        self, records: Sequence[model.Record], batch_id: str | None = None
    ) -> PartialWrite:
        """Write every record the database accepts, and ``batch_id``, in one transaction.

        The records it refuses are found by trial writes that are rolled back (halving the
        batch, so one bad record in n costs about 2·log2(n) small trials), then the rest is
        written with the batch id: the batch is stored exactly once, minus the refused
        records, which are returned (not logged: the caller reports them).
        """
        kept, screened = self._screen(records)
        try:
            return PartialWrite(self._write_once(kept, batch_id), screened)
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            refused = self.find_refused(kept, exc)
            if not refused:
                raise  # only refused together (every part alone passes): not one record's fault
        bad = {refusal.position for refusal in refused}
        stored = self._write_once([r for i, r in enumerate(kept) if i not in bad], batch_id)
        if screened:  # positions in `kept` back to positions in `records`
            gone = {r.position for r in screened}
            origin = [i for i in range(len(records)) if i not in gone]
            refused = [Refusal(origin[r.position], r.message) for r in refused]
        return PartialWrite(stored, sorted(screened + refused))

    def find_refused(
        self, records: Sequence[model.Record], error: BaseException | None = None
    ) -> list[Refusal]:
        """The records the database refuses, by trial writes rolled back; nothing is stored.

        ``error`` is what writing all of ``records`` raised, if that was tried already.
        """
        found: list[Refusal] = []
        self._bisect(records, list(range(len(records))), error, found)
        return found

    def _bisect(
        self,
        records: Sequence[model.Record],
        indexes: list[int],
        error: BaseException | None,
        found: list[Refusal],
    ) -> None:
        if error is None:
            try:
                self._write_once([records[i] for i in indexes], None, commit=False)
                return
            except Exception as exc:
                if not _is_data_error(exc):
                    raise
                error = exc
        if len(indexes) == 1:
            found.append(Refusal(indexes[0], one_line(error)))
            return
        middle = len(indexes) // 2
        self._bisect(records, indexes[:middle], None, found)
        self._bisect(records, indexes[middle:], None, found)

    def _reject(self, record: model.Record, reason: str) -> None:
        self.rejected += 1
        count_refused(record)
        if self.rejected <= self._REJECT_LOG_LIMIT:
            log.warning(
                "jobtrace: dropped a %s record the store refused (%s)%s",
                record[0],
                reason,
                "; further ones are counted only"
                if self.rejected == self._REJECT_LOG_LIMIT
                else "",
            )

    def _screen(self, records: Sequence[model.Record]) -> tuple[list[model.Record], list[Refusal]]:
        """``records`` within :mod:`jobtrace.limits`, in order (text cut, NUL replaced), and
        the records refused there (an over-long key), by position in ``records``."""
        if not dict.fromkeys(map(_KIND, records)).keys() <= model.FIELDS.keys():
            return list(records), []  # _write_once names the unknown kind
        groups = {k: g if type(g) is list else list(g) for k, g in _by_kind(records).items()}
        screened = {kind: limits.screen(kind, group) for kind, group in groups.items()}
        if all(kept is groups[kind] for kind, (kept, _) in screened.items()):
            return list(records), []  # the common case: screen handed every group back
        # Rare: something was cut or refused. Put the screened records back in batch order.
        positions: dict[str, list[int]] = {kind: [] for kind in groups}
        for index, rec in enumerate(records):
            positions[rec[0]].append(index)
        fixed: list[model.Record | None] = [None] * len(records)
        refused: list[Refusal] = []
        for kind, (kept, bad) in screened.items():
            where = positions[kind]
            gone = {index for index, _, _ in bad}
            refused += [
                Refusal(where[index], f"{kind} record field {field!r} {problem}")
                for index, field, problem in bad
            ]
            survivors = (i for j, i in enumerate(where) if j not in gone)
            for i, record in zip(survivors, kept, strict=True):
                fixed[i] = record
        return [r for r in fixed if r is not None], sorted(refused)

    def _write_once(
        self, records: Sequence[model.Record], batch_id: str | None, *, commit: bool = True
    ) -> bool:
        by_kind = _by_kind(records)
        reduce = self.dialect == "postgresql"
        work: Work = []
        jobs = by_kind.get(model.JOB, ())
        experiments = {r[4]: r[6] for r in jobs if r[4] is not None}
        if experiments:
            named = [(model.EXPERIMENT, n, None, None, t) for n, t in experiments.items()]
            work.append((self._job_experiment, self._job_experiment.rows(named, reduce)))
        work += [
            (p, p.rows(by_kind[p.spec.kind], reduce)) for p in self._plans if p.spec.kind in by_kind
        ]
        claim = None
        if batch_id is not None:
            claim = (self._batches, [(batch_id, time.time(), len(records))])
        lost = 0
        for attempt in range(_LOCK_RETRIES):
            try:
                return self._run(work, claim, commit)
            except Exception as exc:
                if attempt == _LOCK_RETRIES - 1:
                    raise
                if _is_connection_lost(exc):
                    # A backend terminated (a failover, pg_terminate_backend, an idle
                    # timeout) between the pool's ping and the commit: the transaction
                    # died with it, so writing it again on a new connection is safe (and
                    # if the commit did land, the batch id makes the retry a no-op). A
                    # database that stays down fails fast instead: the caller spools.
                    lost += 1
                    if lost > _RECONNECTS:
                        raise
                elif not (sqlite.is_locked(exc) or _is_contention(exc)):
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(
        self, work: Work, claim: tuple[TablePlan, Sequence[Row]] | None, commit: bool = True
    ) -> bool:
        """Run ``work`` in one transaction, committed unless ``commit`` is False (a trial)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteWriter(BatchWriter):
    """Writes through one ``sqlite3`` connection (the sink's own; not shared across threads)."""

    dialect = "sqlite"

    def __init__(self, path: Path, conn: sqlite3.Connection | None = None) -> None:
        """Write into the store at ``path``, through ``conn`` if given (already tuned by
        :func:`jobtrace.store.sqlite.connect`; the writer owns it from then on)."""
        super().__init__()
        self._conn = sqlite.connect(path) if conn is None else conn

    def _run(
        self, work: Work, claim: tuple[TablePlan, Sequence[Row]] | None, commit: bool = True
    ) -> bool:
        conn = self._conn
        try:
            # The first statement writes, so sqlite3 opens the transaction with
            # BEGIN IMMEDIATE and the write lock is held before anything is read.
            if claim is not None:
                plan, claimed = claim
                if conn.execute(plan.sql, claimed[0]).rowcount == 0:
                    conn.rollback()
                    return False
            for plan, rows in work:
                conn.executemany(plan.sql, rows)
            if commit:
                conn.commit()
            else:
                conn.rollback()
            return True
        except BaseException:
            conn.rollback()
            raise

    def close(self) -> None:
        self._conn.close()


class PostgresWriter(BatchWriter):
    """Writes through a connection from a SQLAlchemy engine's pool, with COPY."""

    dialect = "postgresql"

    def __init__(self, engine: Any) -> None:
        super().__init__()
        self._engine = engine

    def _run(
        self, work: Work, claim: tuple[TablePlan, Sequence[Row]] | None, commit: bool = True
    ) -> bool:
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                if claim is not None:
                    plan, claimed = claim
                    marks = ", ".join(["%s"] * len(claimed[0]))
                    cols = ", ".join(map(_q, plan.columns))
                    sql = f"INSERT INTO {_q(plan.spec.table)} ({cols}) VALUES ({marks}) "
                    cur.execute(sql + _conflict_clause(plan.spec, plan.columns), claimed[0])
                    if cur.rowcount == 0:
                        raw.rollback()
                        return False
                for plan, rows in work:
                    self._copy(cur, plan, rows)
                if commit:
                    raw.commit()
                else:
                    raw.rollback()
                return True
            except BaseException as exc:
                _abandon(raw, exc)
                raise
            finally:
                cur.close()
        finally:
            raw.close()

    @staticmethod
    def _copy(cur: Any, plan: TablePlan, rows: Iterable[Row]) -> None:
        """Upsert ``rows`` into ``plan``'s table: COPY into a temporary table, then one
        ``INSERT … SELECT … ON CONFLICT``.

        Rows of an insert-only table (spans, items, profiles) are first copied straight
        into it, in a savepoint: a duplicate key (a record written before, rare) rolls that
        back and takes the general way. Copying the rows once instead of twice, and
        sparing the ``INSERT … SELECT``, roughly halves what PostgreSQL spends per span.
        """
        text = _copy_text(rows.columns) if isinstance(rows, _TailRows) else None
        if text is not None and not plan.spec.update:
            cur.execute("SAVEPOINT jt_copy")
            try:
                with cur.copy(plan.direct_copy_sql) as copy:
                    copy.write(text)
            except Exception as exc:
                cur.execute("ROLLBACK TO SAVEPOINT jt_copy")
                if not _is_unique_violation(exc):
                    raise
            else:
                cur.execute("RELEASE SAVEPOINT jt_copy")
                return
        # The temp table lives as long as the pooled connection and empties itself at
        # every commit, so it is created once per connection.
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {plan.temp_table} "
            f"(LIKE {_q(plan.spec.table)}) ON COMMIT DELETE ROWS"
        )
        with cur.copy(plan.copy_sql) as copy:
            if text is not None:
                copy.write(text)
            else:  # a value of a type the text encoder leaves to psycopg
                write_row: Callable[[Row], None] = copy.write_row
                for row in rows:
                    write_row(row)
        cur.execute(plan.sql)


# COPY's text format: a row per line, columns split by tabs, NULL as \N, and these
# characters escaped in values (NUL never reaches here: jobtrace.limits replaces it).
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_COPY_SPECIAL = ("\\", "\n", "\r", "\t")
_COPY_NULL = "\\N"


def _copy_text(columns: Sequence[Sequence[Any]]) -> str | None:
    """The rows of ``columns`` in COPY's text format, or None if a column holds a type left
    to psycopg's own adaptation (anything but str, int, float, bool and None, or a mix
    other than ints with floats).

    psycopg's ``write_row`` adapts every value in a Python call per row (about 2 µs); built
    a column at a time (one C-level pass per column) and joined into lines, a span costs a
    tenth of that, which is much of what a server ingesting into PostgreSQL spends.
    """
    if not columns or not columns[0]:
        return None
    texts: list[Sequence[str]] = []
    for column in columns:
        text = _copy_column(column)
        if text is None:
            return None
        texts.append(text)
    return "\n".join(map("\t".join, zip(*texts, strict=True))) + "\n"


def _copy_column(column: Sequence[Any]) -> Sequence[str] | None:
    types = set(map(type, column))
    nulls = type(None) in types
    types.discard(type(None))
    if not types:
        return [_COPY_NULL] * len(column)
    if types <= {int, float}:
        kind: type = float if float in types else int  # repr of an int is its str
    elif len(types) == 1 and types <= {str, bool}:
        kind = types.pop()
    else:
        return None
    values: Sequence[Any] = [v for v in column if v is not None] if nulls else column
    text: list[str]
    if kind is str:
        joined = "".join(values)
        special = any(c in joined for c in _COPY_SPECIAL)
        text = [v.translate(_COPY_ESCAPES) for v in values] if special else list(values)
    elif kind is bool:
        text = ["t" if v else "f" for v in values]
    elif kind is float:
        text = list(map(repr, values))  # shortest round-trip form; PostgreSQL reads nan/inf
    else:
        text = list(map(str, values))
    if not nulls:
        return text
    it = iter(text)
    return [_COPY_NULL if v is None else next(it) for v in column]


def _abandon(raw: Any, exc: BaseException) -> None:
    """Roll back a failed transaction, or drop a connection that died with the server.

    Rolling back on a dead connection raises (hiding why the write failed), and a dead
    connection handed back to the pool makes the pool's own rollback fail and log a
    traceback on the host program's stderr at every database restart.
    """
    try:
        raw.rollback()
    except Exception:
        raw.invalidate(exc)  # closed, never reused; the pool opens a new one when needed


def _by_kind(records: Sequence[model.Record]) -> dict[str, Sequence[model.Record]]:
    """The records of each kind, in batch order; a batch of one kind is not copied."""
    kinds = dict.fromkeys(map(_KIND, records))
    for kind in kinds:
        if kind not in model.FIELDS:
            raise StoreError(f"unknown record kind {kind!r}")
    if len(kinds) == 1:
        return dict.fromkeys(kinds, records)
    # One C-level pass per kind (a batch holds a handful) beats a Python loop over records.
    return {kind: [r for r in records if r[0] == kind] for kind in kinds}


_KIND = operator.itemgetter(0)


def _is_data_error(exc: BaseException) -> bool:
    """True when the data, not the database, is at fault: retrying the same rows fails again."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.InterfaceError | sqlite3.DataError):
        return True
    if isinstance(exc, UnicodeError | TypeError | ValueError | OverflowError):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.DataError | psycopg.IntegrityError)


def _is_unique_violation(exc: BaseException) -> bool:
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.errors.UniqueViolation)


def _is_contention(exc: BaseException) -> bool:
    """True when PostgreSQL gave up on the transaction because of another one (a deadlock,
    a serialization failure): the same transaction, run again, succeeds."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(
        exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
    )


def _is_connection_lost(exc: BaseException) -> bool:
    """True when PostgreSQL's connection died under the transaction (its backend was
    terminated or the server restarted), as opposed to a refusal to connect at all."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    if isinstance(exc, psycopg.errors.AdminShutdown | psycopg.errors.CrashShutdown):
        return True
    return "server closed the connection" in str(exc) or "consuming input failed" in str(exc)
