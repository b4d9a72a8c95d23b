"""Batch queries: a batch's summary aggregates, computed in SQL, and its items.

A batch is the set of item rows sharing a ``job_id``. Its summary needs counts per status,
sums, extremes, the median and the spread of the timed durations: five small queries that
all walk the covering index ``(job_id, status, duration, samples, measurements, bytes)``,
never the table, and never load items into Python. The median is an ``ORDER BY duration``
with ``OFFSET``, which the index serves in order without sorting; the spread is a second
pass over the same index range, squared deviations from the mean of the first, which
avoids the cancellation of a sum-of-squares formula. The same SQL runs on SQLite (which
has no ``stddev`` or ``percentile`` functions) and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from jobtrace.batch.summary import BatchStats, sorted_error_types
from jobtrace.errors import StoreError
from jobtrace.model import ITEM_STATUSES
from jobtrace.store import jobs as job_queries
from jobtrace.store.schema import items, jobs

__all__ = [
    "batch_stats",
    "count_items",
    "items_query",
    "iter_items",
    "list_items",
    "resolve_batch_id",
]

_c = items.c


def resolve_batch_id(conn: sa.Connection, batch_id: str) -> str | None:
    """The full id of the batch ``batch_id`` names, or ``None`` if nothing is recorded
    under it: a job id (or a unique prefix of one), else the id of items without a job row
    (a batch whose ``start()`` was never called)."""
    job = job_queries.get_job(conn, batch_id)
    if job is not None:
        return str(job["id"])
    found = conn.execute(sa.select(_c.job_id).where(_c.job_id == batch_id).limit(1)).first()
    return batch_id if found is not None else None


def batch_stats(conn: sa.Connection, batch_id: str) -> BatchStats:
    """The summary aggregates of batch ``batch_id`` (a full id; zeros if it has no items)."""
    of_batch = _c.job_id == batch_id
    timed = _c.duration > 0
    per_status = conn.execute(
        sa.select(
            _c.status,
            sa.func.count(),
            sa.func.count(sa.case((timed, 1))),
            sa.func.sum(sa.case((timed, _c.duration))),
            sa.func.min(sa.case((timed, _c.duration))),
            sa.func.max(sa.case((timed, _c.duration))),
            sa.func.sum(_c.samples),
            sa.func.sum(_c.measurements),
            sa.func.sum(_c.bytes),
        )
        .where(of_batch)
        .group_by(_c.status)
    ).all()
    counts = dict.fromkeys(ITEM_STATUSES, 0)
    success: tuple[Any, ...] = (0, 0, None, None, None, None, None, None)
    for status, *row in per_status:
        counts[status] = counts.get(status, 0) + int(row[0])
        if status == "success":
            success = tuple(row)
    _, n, total, low, high, samples, measurements, nbytes = success
    n = int(n)
    median = sq_dev = 0.0
    if n:
        ok = sa.and_(of_batch, _c.status == "success", timed)
        mean = float(total) / n
        deviation = _c.duration - sa.literal(mean, sa.Double)
        sq_dev = float(
            conn.execute(sa.select(sa.func.sum(deviation * deviation)).where(ok)).scalar() or 0.0
        )
        # The middle one (odd n) or two (even n) durations, read in index order.
        middle = (
            conn.execute(
                sa.select(_c.duration)
                .where(ok)
                .order_by(_c.duration)
                .offset((n - 1) // 2)
                .limit(2 - n % 2)
            )
            .scalars()
            .all()
        )
        median = sum(middle) / len(middle)
    error_types = conn.execute(
        sa.select(_c.error_type, sa.func.count())
        .where(of_batch, _c.status == "error", _c.error_type.is_not(None))
        .group_by(_c.error_type)
    ).all()
    times = conn.execute(
        sa.select(jobs.c.start_time, jobs.c.end_time).where(jobs.c.id == batch_id)
    ).first()
    return BatchStats(
        total=sum(counts.values()),
        processed=counts["success"],
        errors=counts["error"],
        skipped=counts["skipped"],
        timed=n,
        duration_sum=float(total or 0.0),
        duration_min=float(low or 0.0),
        duration_max=float(high or 0.0),
        duration_median=float(median),
        duration_sq_dev=sq_dev,
        # PostgreSQL sums bigints as numeric (a Decimal here).
        samples=int(samples or 0),
        measurements=int(measurements or 0),
        nbytes=int(nbytes or 0),
        error_types=sorted_error_types((str(t), int(k)) for t, k in error_types),
        start_time=None if times is None else times[0],
        end_time=None if times is None else times[1],
    )


def items_query(batch_id: str, *, status: str | None = None) -> sa.Select[Any]:
    """Items of batch ``batch_id`` (with ``status``) in the order they were recorded."""
    if status is not None and status not in ITEM_STATUSES:
        raise StoreError(
            f"unknown item status {status!r}; expected one of {', '.join(ITEM_STATUSES)}"
        )
    query = sa.select(items).where(_c.job_id == batch_id)
    if status is not None:
        query = query.where(_c.status == status)
    # An item is recorded when it ends (start + duration); items ending in the same
    # microsecond are told apart by id, which increases within a process.
    return query.order_by(_c.start_time + _c.duration, _c.id)


def list_items(
    conn: sa.Connection,
    batch_id: str,
    *,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Items of batch ``batch_id`` in the order they were recorded, with every column."""
    if limit is not None and limit < 1:
        raise StoreError(f"limit must be at least 1, got {limit}")
    query = items_query(batch_id, status=status).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [dict(row._mapping) for row in conn.execute(query)]


def iter_items(
    conn: sa.Connection, batch_id: str, *, status: str | None = None, page_size: int = 5000
) -> Iterator[dict[str, Any]]:
    """Like :func:`list_items` without a limit, but fetched ``page_size`` rows at a time
    from one query (a server-side cursor on PostgreSQL), so memory does not grow with the
    batch."""
    query = items_query(batch_id, status=status)
    result = conn.execution_options(stream_results=True, yield_per=page_size).execute(query)
    for row in result:
        yield dict(row._mapping)


def count_items(conn: sa.Connection, batch_id: str, *, status: str | None = None) -> int:
    """How many items batch ``batch_id`` has (with ``status``, if given)."""
    query = sa.select(sa.func.count()).select_from(items).where(_c.job_id == batch_id)
    if status is not None:
        query = query.where(_c.status == status)
    return int(conn.execute(query).scalar() or 0)
