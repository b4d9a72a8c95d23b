"""Instrument series in the store: every source's rows, merged, and dead sources retired.

The recorder upserts one row per (source, name, labels) — each process's newest state of
each series (see :mod:`jobtrace.instruments.registry`). Readers merge the sources with the
pure :func:`jobtrace.instruments.merge.merge_series`; :func:`retire_sources` keeps that
merge as cheap as the number of *live* series, however many workers came and went, by
folding the rows of dead sources into one retained row per series (see
:mod:`jobtrace.instruments.merge` for the rules and the tombstones).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import sqlalchemy as sa

from jobtrace import limits, model
from jobtrace.instruments.merge import (
    DEFAULT_LIVE_WINDOW,
    RETIRED_SOURCE,
    TOMBSTONE_TYPE,
    MergedSeries,
    dead_sources,
    fold_sources,
    merge_series,
)
from jobtrace.instruments.registry import SOURCE_SERIES, SeriesRow
from jobtrace.store.migrate import _lock as lock_for_writing
from jobtrace.store.schema import series

__all__ = [
    "DEFAULT_FORGET_AFTER",
    "DEFAULT_RETIRE_AFTER",
    "RetireResult",
    "merged_series",
    "retire_sources",
    "retirement_due",
    "series_overflow",
    "series_rows",
]

#: A source silent this long (seconds) is taken for dead and folded away. Far longer than
#: any flush interval: a source folded while still alive would be counted twice.
DEFAULT_RETIRE_AFTER = 3600.0
#: Tombstones of retired sources are forgotten after this many seconds.
DEFAULT_FORGET_AFTER = 7 * 86400.0

_COLUMNS = (
    series.c.source,
    series.c.name,
    series.c.type,
    series.c.mode,
    series.c.labels,
    series.c.value,
    series.c.special,
    series.c.data,
    series.c.updated_at,
)


class RetireResult(NamedTuple):
    """What one :func:`retire_sources` did."""

    sources: list[str]
    rows_deleted: int
    retired_rows: int
    tombstones_forgotten: int


def _row(r: Any) -> SeriesRow:
    value = model.decode_float(r.special) if r.special is not None else r.value
    return SeriesRow(r.source, r.name, r.type, r.mode, r.labels, value, r.data, r.updated_at)


def series_rows(
    conn: sa.Connection,
    names: list[str] | None = None,
    *,
    for_merge: bool = False,
    capped: bool = False,
) -> list[SeriesRow]:
    """Every source's rows (of the series called ``names``, plus the heartbeats and
    tombstones the merge needs, when given).

    ``for_merge``: what a scrape needs, read cheaply. A tombstone's ``data`` (what its
    source contributed to every series when it was folded) matters only if the source
    reported again since, which is rare; reading it for every dead source would make each
    scrape slower as workers come and go. It is read only for those sources.

    ``capped``: at most :data:`~jobtrace.limits.MAX_SERIES_PER_NAME` label sets per
    (source, name) and :data:`~jobtrace.limits.MAX_SERIES_PER_SOURCE` rows per source (its
    heartbeat first), the first by name and labels: one client posting 200,000 label sets
    must not make every scrape megabytes long. :func:`series_overflow` counts the rest.
    """
    columns: tuple[Any, ...] = _COLUMNS
    if for_merge:
        light = sa.case((series.c.type == TOMBSTONE_TYPE, sa.null()), else_=series.c.data)
        columns = tuple(light.label("data") if c is series.c.data else c for c in _COLUMNS)
    query = sa.select(*columns)
    if names is not None:
        query = query.where(series.c.name.in_([*names, SOURCE_SERIES]))
    if capped:
        query = _capped(query)
    # A scrape reads every row: plain tuples unpacked by position cost a third of what
    # named access on SQLAlchemy rows does.
    decode, make = model.decode_float, SeriesRow
    rows = [
        make(source, name, kind, mode, labels, value if special is None else decode(special),
             data, updated_at)
        for source, name, kind, mode, labels, value, special, data, updated_at
        in conn.execute(query)
    ]  # fmt: skip
    return _with_needed_tombstones(conn, rows) if for_merge else rows


def _capped(query: sa.Select[Any]) -> sa.Select[Any]:
    """``query`` (over ``series``) keeping the first rows of each (source, name) and source."""
    beat_first = sa.case((series.c.name == SOURCE_SERIES, 0), else_=1)
    per_name = sa.func.row_number().over(
        partition_by=(series.c.source, series.c.name), order_by=series.c.labels
    )
    per_source = sa.func.row_number().over(
        partition_by=series.c.source, order_by=(beat_first, series.c.name, series.c.labels)
    )
    ranked = query.add_columns(per_name.label("_per_name"), per_source.label("_per_source"))
    inner = ranked.subquery()
    kept = [c for c in inner.c if c.name not in ("_per_name", "_per_source")]
    return sa.select(*kept).where(
        inner.c._per_name <= limits.MAX_SERIES_PER_NAME,
        inner.c._per_source <= limits.MAX_SERIES_PER_SOURCE,
    )


def series_overflow(conn: sa.Connection, kept: int) -> int:
    """How many stored series a capped read (:func:`series_rows`) left out, given the
    number of rows it ``kept`` (tombstone lookups aside)."""
    total = conn.execute(sa.select(sa.func.count()).select_from(series)).scalar_one()
    return max(0, int(total) - kept)


def _with_needed_tombstones(conn: sa.Connection, rows: list[SeriesRow]) -> list[SeriesRow]:
    """``rows`` with the full tombstone of every source that has rows newer than it."""
    tombs = {
        r.source: r.updated_at for r in rows if r.name == SOURCE_SERIES and r.type == TOMBSTONE_TYPE
    }
    if not tombs:
        return rows
    wanted = {
        r.source
        for r in rows
        if r.source in tombs and r.name != SOURCE_SERIES and r.updated_at > tombs[r.source]
    }
    if not wanted:
        return rows
    full = {
        (r.source, r.updated_at): r.data
        for r in conn.execute(
            sa.select(series.c.source, series.c.updated_at, series.c.data).where(
                series.c.name == SOURCE_SERIES,
                series.c.type == TOMBSTONE_TYPE,
                series.c.source.in_(sorted(wanted)),
            )
        )
    }
    return [
        r._replace(data=full.get((r.source, r.updated_at), r.data))
        if r.source in wanted and r.name == SOURCE_SERIES and r.type == TOMBSTONE_TYPE
        else r
        for r in rows
    ]


def merged_series(
    conn: sa.Connection,
    *,
    names: list[str] | None = None,
    now: float | None = None,
    live_window: float = DEFAULT_LIVE_WINDOW,
) -> list[MergedSeries]:
    """The series merged over every source (see :func:`merge_series`)."""
    rows = series_rows(conn, names, for_merge=True)
    return merge_series(rows, now=time.time() if now is None else now, live_window=live_window)


def retirement_due(
    conn: sa.Connection,
    *,
    now: float,
    retire_after: float = DEFAULT_RETIRE_AFTER,
    forget_after: float = DEFAULT_FORGET_AFTER,
) -> bool:
    """Whether :func:`retire_sources` has work: a source that finished or fell silent, a
    tombstoned source that reported again (a late replay), or a tombstone to forget.

    Reads the heartbeat and tombstone rows only (one per source, by the name index), so a
    server can ask often and fold rarely, without taking the write lock to find nothing.
    """
    beats = conn.execute(
        sa.select(series.c.source, series.c.type, series.c.data, series.c.updated_at).where(
            series.c.name == SOURCE_SERIES
        )
    ).all()
    tombstoned = {r.source for r in beats if r.type == TOMBSTONE_TYPE}
    for source, kind, data, updated_at in beats:
        if kind == TOMBSTONE_TYPE:
            due = updated_at < now - forget_after
        else:
            finished = isinstance(data, dict) and bool(data.get("final"))
            due = source in tombstoned or finished or updated_at < now - retire_after
        if due:
            return True
    return False


def _insert_params(row: SeriesRow) -> dict[str, Any]:
    value, special = (None, None) if row.value is None else model.split_float(row.value)
    return {
        "source": row.source,
        "name": row.name,
        "labels": row.labels,
        "job_id": None,
        "type": row.type,
        "mode": row.mode,
        "value": value,
        "special": special,
        "data": row.data,
        "updated_at": row.updated_at,
    }


def retire_sources(
    engine: sa.Engine,
    *,
    now: float | None = None,
    retire_after: float = DEFAULT_RETIRE_AFTER,
    forget_after: float = DEFAULT_FORGET_AFTER,
) -> RetireResult:
    """Fold dead sources into the retired source, in one locked transaction.

    Dead: the source's heartbeat said it finished, or nothing came from it for
    ``retire_after`` seconds. Safe to run from several servers at once (the transaction
    holds the write lock on SQLite, an advisory lock on PostgreSQL, before it reads).
    """
    now = time.time() if now is None else now
    with engine.connect() as conn:
        lock_for_writing(conn)
        rows = series_rows(conn)
        dead = dead_sources(rows, now=now, retire_after=retire_after)
        deleted = 0
        folded: list[SeriesRow] = []
        if dead:
            folded, tombstones = fold_sources(rows, dead, now=now)
            gone = sorted(dead | {RETIRED_SOURCE})
            for start in range(0, len(gone), 500):  # bounded IN lists on both databases
                chunk = gone[start : start + 500]
                deleted += conn.execute(series.delete().where(series.c.source.in_(chunk))).rowcount
            new_rows = [_insert_params(r) for r in folded + tombstones]
            if new_rows:
                conn.execute(series.insert(), new_rows)
        forgotten = conn.execute(
            series.delete().where(
                series.c.name == SOURCE_SERIES,
                series.c.type == TOMBSTONE_TYPE,
                series.c.updated_at < now - forget_after,
            )
        ).rowcount
        conn.commit()
    return RetireResult(sorted(dead), deleted, len(folded), forgotten)
