"""Job queries. A job's stored status stays ``running`` if its process dies without a word;
readers report it as ``lost`` once its heartbeat is stale, worked out at read time.

:func:`find_jobs` pages, sorts and searches jobs, by job fields or by the latest value of a
metric (from ``metric_latest``); :func:`create_job` creates one as a record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa

from jobtrace import _ids, limits, model
from jobtrace.errors import ConflictError, JobNotFoundError, QueryError, StoreError
from jobtrace.model import JOB_STATUSES
from jobtrace.store.experiments import check_name, insert_if_absent
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, Page, check_paging, order_by
from jobtrace.store.schema import experiments, jobs, metric_latest
from jobtrace.store.search import (
    FIELD_PREFIXES,
    DocumentValue,
    Pattern,
    SearchFields,
    compile_search,
    field_key,
    literal,
    match_pattern,
    special_compare,
)

#: A running job is lost when no heartbeat came for this many heartbeat intervals…
LOST_AFTER_INTERVALS = 5
#: …plus this grace (seconds), for a process paused by a busy machine.
LOST_GRACE = 10.0
_DEFAULT_INTERVAL = 2.0
#: The columns a list of jobs holds: all but the traceback (up to 64 KiB a job, read with
#: one job by :func:`get_job`, not a thousand times over in a page).
_LISTED: Final = tuple(c for c in jobs.c if c.name != "traceback")


def _stale_before(now: float) -> Any:
    interval = sa.func.coalesce(jobs.c.heartbeat_interval, _DEFAULT_INTERVAL)
    last = sa.func.coalesce(jobs.c.last_heartbeat, jobs.c.start_time)
    return last + interval * LOST_AFTER_INTERVALS + LOST_GRACE < now


def is_stale(row: dict[str, Any], now: float) -> bool:
    interval = row.get("heartbeat_interval") or _DEFAULT_INTERVAL
    last = row.get("last_heartbeat") or row["start_time"]
    return bool(last + interval * LOST_AFTER_INTERVALS + LOST_GRACE < now)


def _to_dict(row: sa.Row[Any], now: float) -> dict[str, Any]:
    return _as_read(dict(row._mapping), now)


def _as_read(data: dict[str, Any], now: float) -> dict[str, Any]:
    """A job's fields as readers see them: no ``seq``, ``lost`` worked out."""
    data.pop("seq", None)
    if data["status"] == "running" and is_stale(data, now):
        data["status"] = "lost"
    return data


def _status_filter(status: str, now: float) -> Any:
    if status not in JOB_STATUSES:
        raise StoreError(f"unknown status {status!r}; expected one of {', '.join(JOB_STATUSES)}")
    stale = _stale_before(now)
    if status == "lost":
        return sa.and_(jobs.c.status == "running", stale)
    if status == "running":
        return sa.and_(jobs.c.status == "running", sa.not_(stale))
    return jobs.c.status == status


def list_jobs(
    conn: sa.Connection,
    *,
    experiment: str | None = None,
    status: str | None = None,
    limit: int | None = 50,
    now: float | None = None,
) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    query = sa.select(*_LISTED).order_by(jobs.c.start_time.desc(), jobs.c.id.desc())
    if experiment is not None:
        query = query.where(jobs.c.experiment == experiment)
    if status is not None:
        query = query.where(_status_filter(status, now))
    if limit is not None:
        query = query.limit(limit)
    return [_to_dict(row, now) for row in conn.execute(query)]


def get_job(conn: sa.Connection, job_id: str, *, now: float | None = None) -> dict[str, Any] | None:
    now = time.time() if now is None else now
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    if row is None and job_id:
        # Ids are long; accept a unique prefix as `git` does. substr, not LIKE: LIKE is
        # case-insensitive on SQLite and case-sensitive on PostgreSQL.
        prefix = sa.func.substr(jobs.c.id, 1, len(job_id))
        found = conn.execute(sa.select(jobs).where(prefix == job_id).limit(2)).all()
        if len(found) > 1:
            raise QueryError(f"job id prefix {job_id!r} is ambiguous; give more characters")
        row = found[0] if found else None
    return None if row is None else _to_dict(row, now)


def job_by_id(conn: sa.Connection, job_id: str, *, now: float | None = None) -> dict[str, Any]:
    """The job with exactly this id (no prefixes); :class:`JobNotFoundError` if none."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    if row is None:
        raise JobNotFoundError(job_id)
    return _to_dict(row, time.time() if now is None else now)


def require_job(conn: sa.Connection, job_id: str) -> None:
    """Raise :class:`JobNotFoundError` unless a job has exactly this id."""
    if conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
        raise JobNotFoundError(job_id)


# -- creating --------------------------------------------------------------------------------


def create_job(
    conn: sa.Connection,
    *,
    job_id: str | None = None,
    name: str | None = None,
    experiment: str | None = None,
    status: str = "running",
    start_time: float | None = None,
    end_time: float | None = None,
    host: str | None = None,
    heartbeat_interval: float | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Create a job record (and its experiment if new); :class:`ConflictError` if the id
    is taken. ``job_id`` defaults to a new time-ordered id, ``start_time`` to ``now``;
    ``duration`` follows from ``end_time``. Run it in a transaction.

    A ``running`` job created this way is reported ``lost`` unless something sends its
    snapshots (with heartbeats) afterwards, as a job recorded over HTTP does.
    """
    now = time.time() if now is None else now
    if job_id is None:
        job_id = _ids.time_ordered_id()
    elif not isinstance(job_id, str) or not _ids.is_valid_id(job_id):
        raise QueryError(
            f"job id {job_id!r} is not valid: use 1-128 printable characters without "
            "spaces or slashes"
        )
    if status not in JOB_STATUSES or status == "lost":
        allowed = ", ".join(s for s in JOB_STATUSES if s != "lost")
        raise QueryError(f"a job cannot be created as {status!r}; expected one of {allowed}")
    for what, value in (("tags", tags), ("params", params)):
        if value is not None and not isinstance(value, Mapping):
            raise QueryError(f"job {what} must be an object, got {type(value).__name__}")
    for what, seconds in (
        ("start time", start_time),
        ("end time", end_time),
        ("heartbeat interval", heartbeat_interval),
    ):
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float)
        ):
            raise QueryError(f"{what} must be a number of seconds, got {seconds!r}")
    if heartbeat_interval is not None and not 0 < heartbeat_interval < math.inf:
        raise QueryError(f"heartbeat interval must be above 0, got {heartbeat_interval!r}")
    start = now if start_time is None else float(start_time)
    values = dict.fromkeys(model.FIELDS[model.JOB])
    values.update(
        id=job_id,
        seq=time.time_ns(),
        name=None if name is None else _text(name, "job name", "name"),
        experiment=None if experiment is None else check_name(experiment),
        status=status,
        start_time=start,
        end_time=None if end_time is None else float(end_time),
        duration=None if end_time is None else max(0.0, float(end_time) - start),
        host=None if host is None else _text(host, "host", "host"),
        tags=model.clean(dict(tags or {})),
        params=model.clean(dict(params or {})),
        last_heartbeat=now,
        heartbeat_interval=None if heartbeat_interval is None else float(heartbeat_interval),
    )
    if values["experiment"] is not None:
        experiment_row = {"name": values["experiment"], "created_at": now, "tags": {}}
        insert_if_absent(conn, experiments, experiment_row)
    if not insert_if_absent(conn, jobs, values):
        raise ConflictError(f"job {job_id!r} exists already")
    return _as_read(dict(values), now)


def _text(value: object, what: str, field: str) -> str:
    """A job's text field as every path stores it: cut to its width (jobtrace.limits)."""
    if not isinstance(value, str) or not value.strip():
        raise QueryError(f"{what} must be a non-empty string, got {value!r}")
    return limits.cap_text(value, limits.TEXT_LIMITS[model.JOB][field][0])


# -- finding ---------------------------------------------------------------------------------

#: Numeric job fields: searchable with comparisons (``duration>60``) and sortable.
_NUMBER_FIELDS: Final = (
    "start_time",
    "end_time",
    "duration",
    "peak_memory_kb",
    "cpu_user",
    "cpu_sys",
    "exit_code",
    "pid",
    "last_heartbeat",
)
#: Job fields ``sort_by`` accepts (camelCase spellings too), besides ``metric.NAME``.
JOB_SORT_FIELDS: Final = ("id", "name", "experiment", "status", "host", *_NUMBER_FIELDS)


#: A job's JSON documents a search or sort may name a key of (``param.lr``, ``tag.team``).
_DOCUMENTS: Final = {"param": jobs.c.params, "tag": jobs.c.tags}


def _metric_condition(name: str, op: str, number: float) -> sa.ColumnElement[bool]:
    # EXISTS on metric_latest's primary key: one index probe per candidate job.
    latest = metric_latest.alias("search_latest")
    return sa.exists().where(
        latest.c.job_id == jobs.c.id,
        latest.c.name == name,
        special_compare(latest.c.value, latest.c.special, op, number),
    )


def job_search_fields(now: float) -> SearchFields:
    """What a job search may name (``status:lost`` is worked out from heartbeats at ``now``)."""

    def status(pattern: Pattern) -> sa.ColumnElement[bool] | None:
        text = literal(pattern)
        if text is None or text.lower() not in JOB_STATUSES:
            return None
        return _status_filter(text.lower(), now)  # type: ignore[no-any-return]

    def error(pattern: Pattern) -> sa.ColumnElement[bool] | None:
        return sa.or_(
            match_pattern(jobs.c.error_type, pattern, False),
            match_pattern(jobs.c.error_message, pattern, True),
        )

    text_fields = ("id", "name", "experiment", "status", "host", "error_type", "error_message")
    return SearchFields(
        text={f: jobs.c[f] for f in text_fields},
        free_text=(jobs.c.id, jobs.c.name, jobs.c.experiment, jobs.c.error_message),
        numbers={f: jobs.c[f] for f in _NUMBER_FIELDS},
        custom={"status": status, "error": error},
        metric=_metric_condition,
        documents=_DOCUMENTS,
    )


def _sort_keys(
    sort_by: str | None, bare_metric: bool
) -> tuple[list[sa.ColumnElement[Any]], Any | None]:
    """(sort keys, metric_latest alias to outer-join) for ``sort_by``."""
    if sort_by is None:
        return [jobs.c.start_time], None
    if not isinstance(sort_by, str) or not sort_by:
        raise QueryError(f"sort field must be a non-empty string, got {sort_by!r}")
    head, dot, metric = sort_by.partition(".")
    prefix = FIELD_PREFIXES.get(head.lower()) if dot and metric else None
    if prefix in _DOCUMENTS:
        # A param or tag: numbers by value first, then other values as text, jobs without
        # it last (each key NULL where it does not apply; order_by puts NULLs last).
        document = _DOCUMENTS[prefix]
        as_number = DocumentValue(document, metric, as_number=True)
        as_text = DocumentValue(document, metric, as_number=False)
        return [as_number, sa.case((as_number.is_(None), as_text), else_=None)], None
    key = field_key(sort_by)
    if prefix != "metric":
        if key in JOB_SORT_FIELDS:
            return [jobs.c[key]], None
        if not bare_metric:
            raise QueryError(
                f"cannot sort jobs by {sort_by!r}; expected one of "
                f"{', '.join(JOB_SORT_FIELDS)}, metric.NAME, param.NAME or tag.NAME"
            )
        metric = sort_by  # Dioptra's sortBy names a metric
    latest = metric_latest.alias("sort_latest")
    joined = (latest, sa.and_(latest.c.job_id == jobs.c.id, latest.c.name == metric))
    # -inf < finite < inf; NaN and "no such metric" go last in either direction (NULL key).
    rank = sa.case(
        (latest.c.special == "-inf", 0),
        (latest.c.value.is_not(None), 1),
        (latest.c.special == "inf", 2),
        else_=None,
    )
    return [rank, latest.c.value], joined


def find_jobs(
    conn: sa.Connection,
    *,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    sort_by: str | None = None,
    descending: bool | None = None,
    index: int = 0,
    limit: int | None = DEFAULT_PAGE_LENGTH,
    now: float | None = None,
    bare_metric_sort: bool = False,
) -> Page[dict[str, Any]]:
    """Jobs (of ``experiment`` and with ``status`` if given) matching ``search``, paged
    from element ``index``.

    ``sort_by`` is a job field (:data:`JOB_SORT_FIELDS`, snake_case or camelCase),
    ``metric.NAME`` (the latest value), ``param.NAME`` or ``tag.NAME`` (numbers as numbers
    before other values as text); jobs without the metric, param or tag come last. With
    ``bare_metric_sort`` any other name is a metric name too, as Dioptra's ``sortBy``. The
    default is newest first; ``descending`` defaults to False when ``sort_by`` is given.
    Ties are broken by id, so pages never overlap or skip.
    """
    check_paging(index, limit)
    now = time.time() if now is None else now
    keys, joined = _sort_keys(sort_by, bare_metric_sort)
    desc = (sort_by is None) if descending is None else bool(descending)
    where = []
    if experiment is not None:
        where.append(jobs.c.experiment == experiment)
    if status is not None:
        if status not in JOB_STATUSES:
            raise QueryError(
                f"unknown status {status!r}; expected one of {', '.join(JOB_STATUSES)}"
            )
        where.append(_status_filter(status, now))
    condition = compile_search(search, job_search_fields(now))
    if condition is not None:
        where.append(condition)
    total = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(*where))
    count = int(total.scalar_one())
    if index >= count:
        return Page([], index, limit, count)
    source: Any = jobs
    if joined is not None:
        source = jobs.outerjoin(*joined)
    query = (
        sa.select(*_LISTED)
        .select_from(source)
        .where(*where)
        .order_by(*order_by([*keys, jobs.c.id], desc))
        .offset(index)
        .limit(limit)
    )
    result = conn.execute(query)
    # Keys once and rows all at once: a page may hold 1,000 jobs, and a Row's mapping
    # view per row cost more than the rest of the read.
    columns = list(result.keys())
    rows = [_as_read(dict(zip(columns, row, strict=True)), now) for row in result.all()]
    return Page(rows, index, limit, count)
