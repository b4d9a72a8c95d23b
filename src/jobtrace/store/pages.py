"""Paged, sorted listings for the REST API: one page of rows plus the total count.

Every listing orders by the requested column and then by the table's key, so the order is
total and offset paging returns each row exactly once. Readers call these through
:meth:`jobtrace.store.Store.read`-style connections (``store._read(fn, …)``).

``search`` is accepted everywhere and routed through :func:`search_clause`, the one hook
where the search language (:mod:`jobtrace.store.search`, built separately) plugs in.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from jobtrace.errors import StoreError
from jobtrace.store import jobs as job_queries
from jobtrace.store import traces as trace_queries
from jobtrace.store.schema import experiments, jobs, spans

__all__ = [
    "EXPERIMENT_SORT_FIELDS",
    "JOB_SORT_FIELDS",
    "Page",
    "QueryError",
    "get_experiment",
    "get_job",
    "page_experiments",
    "page_jobs",
    "page_traces",
    "search_clause",
]

#: (total number of matching rows, the rows of the page)
Page = tuple[int, list[dict[str, Any]]]

JOB_SORT_FIELDS = (
    "id",
    "name",
    "experiment",
    "status",
    "start_time",
    "end_time",
    "duration",
    "peak_memory_kb",
    "cpu_user",
    "cpu_sys",
    "exit_code",
    "host",
    "last_heartbeat",
)
EXPERIMENT_SORT_FIELDS = ("name", "description", "created_at", "job_count")


class QueryError(StoreError, ValueError):
    """A listing's parameters are invalid: an unknown sort field, a search that does not
    parse. The server answers 422 with the message."""


def search_clause(resource: str, text: str) -> Any:
    """The WHERE clause for a ``search`` on ``resource`` (``"jobs"`` or ``"experiments"``).

    The hook for :mod:`jobtrace.store.search`: until that module is merged, any non-empty
    search is refused with a :class:`QueryError` (never pasted into SQL).
    """
    if not text.strip():
        return sa.true()
    raise QueryError(f"search is not supported on {resource} by this server yet")


def _order(
    fields: tuple[str, ...],
    sort_by: str | None,
    descending: bool | None,
    default: tuple[str, bool],
    columns: dict[str, Any],
    key: Any,
) -> list[Any]:
    """ORDER BY the requested field (``default`` = (field, descending) when none is
    given), then by ``key`` in the same direction so the order is total."""
    name = sort_by or default[0]
    if name not in fields:
        raise QueryError(f"cannot sort by {name!r}; sortable fields: {', '.join(fields)}")
    if descending is None:
        descending = default[1] if sort_by is None else False
    column = columns[name]
    return [column.desc(), key.desc()] if descending else [column.asc(), key.asc()]


def page_jobs(
    conn: sa.Connection,
    *,
    offset: int,
    limit: int,
    sort_by: str | None = None,
    descending: bool | None = None,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    now: float | None = None,
) -> Page:
    """Jobs, newest first unless ``sort_by`` says otherwise, with ``lost`` worked out."""
    now = time.time() if now is None else now
    where = []
    if experiment is not None:
        where.append(jobs.c.experiment == experiment)
    if status is not None:
        try:
            where.append(job_queries._status_filter(status, now))
        except StoreError as exc:
            raise QueryError(str(exc)) from None
    if search:
        where.append(search_clause("jobs", search))
    order = _order(
        JOB_SORT_FIELDS, sort_by, descending, ("start_time", True), dict(jobs.c), jobs.c.id
    )
    total = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(*where)).scalar_one()
    query = sa.select(jobs).where(*where).order_by(*order).offset(offset).limit(limit)
    return int(total), [job_queries._to_dict(row, now) for row in conn.execute(query)]


def get_job(conn: sa.Connection, job_id: str, *, now: float | None = None) -> dict[str, Any] | None:
    """One job by its exact id (the API takes no prefixes: a URL names one thing)."""
    now = time.time() if now is None else now
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    return None if row is None else job_queries._to_dict(row, now)


def _job_counts() -> Any:
    return (
        sa.select(jobs.c.experiment, sa.func.count().label("job_count"))
        .where(jobs.c.experiment.is_not(None))
        .group_by(jobs.c.experiment)
        .subquery("counts")
    )


def _experiment_query(counts: Any) -> Any:
    job_count = sa.func.coalesce(counts.c.job_count, 0).label("job_count")
    return (
        sa.select(experiments, job_count).outerjoin(
            counts, counts.c.experiment == experiments.c.name
        ),
        job_count,
    )


def page_experiments(
    conn: sa.Connection,
    *,
    offset: int,
    limit: int,
    sort_by: str | None = None,
    descending: bool | None = None,
    search: str | None = None,
) -> Page:
    """Experiments with their number of jobs, by name unless ``sort_by`` says otherwise."""
    where = [search_clause("experiments", search)] if search else []
    query, job_count = _experiment_query(_job_counts())
    columns = {**experiments.c, "job_count": job_count}
    order = _order(
        EXPERIMENT_SORT_FIELDS, sort_by, descending, ("name", False), columns, experiments.c.name
    )
    total = conn.execute(
        sa.select(sa.func.count()).select_from(experiments).where(*where)
    ).scalar_one()
    rows = conn.execute(query.where(*where).order_by(*order).offset(offset).limit(limit))
    return int(total), [dict(row._mapping) for row in rows]


def get_experiment(conn: sa.Connection, name: str) -> dict[str, Any] | None:
    """One experiment by name, with its number of jobs."""
    query, _ = _experiment_query(_job_counts())
    row = conn.execute(query.where(experiments.c.name == name)).first()
    return None if row is None else dict(row._mapping)


def page_traces(conn: sa.Connection, *, offset: int, limit: int, job_id: str | None = None) -> Page:
    """Trace summaries (see :func:`jobtrace.store.traces.list_traces`), newest first."""
    count = sa.select(sa.func.count(sa.distinct(spans.c.trace_id)))
    if job_id is not None:
        count = count.where(spans.c.job_id == job_id)
    total = conn.execute(count).scalar_one()
    rows = trace_queries.list_traces(conn, job_id=job_id, limit=limit, offset=offset)
    return int(total), rows
