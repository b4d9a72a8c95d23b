"""Trace queries: the spans of one trace, the traces of a job, and recent-trace summaries.

A trace is the set of span rows sharing a ``trace_id``. Trace ids begin with a 48-bit
millisecond timestamp, so ordering by ``trace_id`` descending lists recent traces first
straight from the primary key, without an index on start times. Summaries are aggregated
in SQL (one ``GROUP BY`` over the newest ``limit`` traces), never by loading spans.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import sqlalchemy as sa

from jobtrace.errors import QueryError, StoreError
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, Page, check_paging
from jobtrace.store.schema import spans
from jobtrace.store.trace_search import TraceSearch, span_conditions

__all__ = [
    "DROPPED_KEY",
    "find_traces",
    "get_trace",
    "job_trace_ids",
    "list_traces",
    "resolve_trace_id",
]

#: Key in a root span's info counting the spans a per-trace cap dropped.
DROPPED_KEY = "jobtrace.dropped_spans"

_HEX = re.compile(r"[0-9a-f]+")


def _prefix_filter(prefix: str) -> Any:
    # substr, not LIKE: LIKE is case-insensitive on SQLite and case-sensitive on PostgreSQL.
    exact = sa.func.substr(spans.c.trace_id, 1, len(prefix)) == prefix
    if not _HEX.fullmatch(prefix):
        return exact
    # A range on the primary key lets both databases seek instead of scanning every span;
    # for lowercase hex, "g" sorts after every digit and letter used, in C and ICU/glibc
    # collations alike. substr stays as the exact test.
    return sa.and_(spans.c.trace_id >= prefix, spans.c.trace_id < prefix + "g", exact)


def resolve_trace_id(conn: sa.Connection, trace_id: str) -> str | None:
    """The full id of the trace ``trace_id`` names (itself or a unique prefix), or ``None``.

    Raises :class:`QueryError` when a prefix matches more than one trace.
    """
    if not trace_id:
        return None
    found = conn.execute(
        sa.select(spans.c.trace_id).where(spans.c.trace_id == trace_id).limit(1)
    ).first()
    if found is not None:
        return trace_id
    matches = (
        conn.execute(
            sa.select(spans.c.trace_id).where(_prefix_filter(trace_id)).distinct().limit(2)
        )
        .scalars()
        .all()
    )
    if len(matches) > 1:
        raise QueryError(f"trace id prefix {trace_id!r} is ambiguous; give more characters")
    return matches[0] if matches else None


def get_trace(conn: sa.Connection, trace_id: str) -> list[dict[str, Any]] | None:
    """Every span of one trace (by id or unique prefix), ordered by start; ``None`` if unknown."""
    full_id = resolve_trace_id(conn, trace_id)
    if full_id is None:
        return None
    query = (
        sa.select(spans)
        .where(spans.c.trace_id == full_id)
        .order_by(spans.c.start_ns, spans.c.span_id)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def job_trace_ids(conn: sa.Connection, job_id: str) -> list[str]:
    """The ids of every trace with at least one span in job ``job_id``, newest first."""
    query = (
        sa.select(spans.c.trace_id)
        .where(spans.c.job_id == job_id)
        .distinct()
        .order_by(spans.c.trace_id.desc())
    )
    return list(conn.execute(query).scalars())


def _search(search: TraceSearch | None, job_id: str | None) -> TraceSearch:
    search = search or TraceSearch()
    if job_id is not None:
        if search.job_id not in (None, job_id):
            raise StoreError("give the job once: as job_id or in the search")
        search = dataclasses.replace(search, job_id=job_id)
    return search


def list_traces(
    conn: sa.Connection,
    *,
    job_id: str | None = None,
    search: TraceSearch | None = None,
    limit: int | None = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Summaries of the newest traces (of job ``job_id``, matching ``search``, if given),
    newest first; a trace matches when one of its spans meets every condition.

    Each summary holds ``trace_id``, ``name`` and ``service`` (the root span's: the
    earliest span without a parent, else the earliest span), ``job_id`` (the root's, else
    any span's), ``start_ns`` (earliest start), ``duration_ns`` (latest end minus earliest
    start), ``spans``, ``errors`` (spans with an error type) and ``dropped_spans`` (counted
    by the per-trace cap on the root). ``offset`` skips that many of the newest traces first.
    """
    if limit is not None and limit < 1:
        raise StoreError(f"limit must be at least 1, got {limit}")
    search = _search(search, job_id)
    inner_root = spans.alias("inner_root")
    # The root of each trace, chosen per group by a correlated lookup on the primary key:
    # parentless spans first, then the earliest.
    root_span_id = (
        sa.select(inner_root.c.span_id)
        .where(inner_root.c.trace_id == spans.c.trace_id)
        .order_by(
            sa.case((inner_root.c.parent_id.is_(None), 0), else_=1),
            inner_root.c.start_ns,
            inner_root.c.span_id,
        )
        .limit(1)
        .scalar_subquery()
    )
    summary = sa.select(
        spans.c.trace_id,
        sa.func.min(spans.c.start_ns).label("start_ns"),
        sa.func.max(spans.c.start_ns + spans.c.duration_ns).label("end_ns"),
        sa.func.count().label("spans"),
        sa.func.count(spans.c.error_type).label("errors"),
        sa.func.min(spans.c.job_id).label("any_job_id"),
        root_span_id.label("root_span_id"),
    ).group_by(spans.c.trace_id)
    if search:
        # The page's trace ids first: a walk of the primary key from the newest trace
        # down that stops at the page's last match (DISTINCT over an ordered index scan),
        # then only those traces are summarised. An IN over every match would evaluate
        # the conditions on every span of the store before summarising anything.
        matching = spans.alias("matching")
        ids = (
            sa.select(matching.c.trace_id)
            .where(*span_conditions(search, conn.dialect.name, matching))
            .distinct()
            .order_by(matching.c.trace_id.desc())
        )
        if limit is not None:
            ids = ids.limit(limit)
        if offset:
            ids = ids.offset(offset)
        summary = summary.where(spans.c.trace_id.in_(ids))
    summary = summary.order_by(spans.c.trace_id.desc())
    if not search:
        if limit is not None:
            summary = summary.limit(limit)
        if offset:
            summary = summary.offset(offset)
    top = summary.subquery("top")
    root = spans.alias("root")
    query = (
        sa.select(
            top.c.trace_id,
            root.c.name,
            root.c.service,
            sa.func.coalesce(root.c.job_id, top.c.any_job_id).label("job_id"),
            top.c.start_ns,
            (top.c.end_ns - top.c.start_ns).label("duration_ns"),
            top.c.spans,
            top.c.errors,
            # The raw JSON value, checked below: a CAST would fail the whole query on
            # PostgreSQL if one root held a non-integer under this key.
            root.c.info[DROPPED_KEY].label("dropped_spans"),
        )
        .join(
            root,
            sa.and_(root.c.trace_id == top.c.trace_id, root.c.span_id == top.c.root_span_id),
        )
        .order_by(top.c.trace_id.desc())
    )
    out = []
    for row in conn.execute(query):
        data = dict(row._mapping)
        dropped = data["dropped_spans"]
        data["dropped_spans"] = dropped if type(dropped) is int else 0
        out.append(data)
    return out


def find_traces(
    conn: sa.Connection,
    *,
    job_id: str | None = None,
    search: TraceSearch | None = None,
    index: int = 0,
    limit: int | None = DEFAULT_PAGE_LENGTH,
) -> Page[dict[str, Any]]:
    """A page of trace summaries (see :func:`list_traces`), newest first, from element
    ``index``; the trace id orders them totally, so pages never overlap or skip."""
    check_paging(index, limit)
    search = _search(search, job_id)
    count = sa.select(sa.func.count(sa.distinct(spans.c.trace_id))).where(
        *span_conditions(search, conn.dialect.name)
    )
    total = int(conn.execute(count).scalar_one())
    if index >= total:
        return Page([], index, limit, total)
    return Page(list_traces(conn, search=search, limit=limit, offset=index), index, limit, total)
