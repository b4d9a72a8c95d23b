"""Metric queries: the latest point of each name, a paged history, a downsampled series for
charts, a summary, and the latest metrics of every job of an experiment.

Values come back as floats exactly as logged: the store keeps NaN and ±Inf in a ``special``
column beside the finite ``value`` (SQLite would store NaN as NULL), and every query puts
them back together. "Latest" reads come from ``metric_latest``, which the writer keeps at
the highest step of each (job, name): one index lookup per job rather than a scan of the
history (field notes: 32 ms for 1,000 jobs x 20 names, against 282 ms with LATERAL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from jobtrace.errors import QueryError
from jobtrace.store.experiments import require_experiment
from jobtrace.store.jobs import find_jobs, require_job
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, Page, check_paging
from jobtrace.store.schema import metric_latest, metrics

__all__ = [
    "MAX_BUCKETS",
    "MAX_BUCKET_JOBS",
    "Bucketed",
    "JobMetrics",
    "MetricBuckets",
    "MetricPoint",
    "MetricSummary",
    "experiment_metrics",
    "find_job_metrics",
    "jobs_with_metrics",
    "latest_metrics",
    "latest_metrics_of_jobs",
    "metric_buckets",
    "metric_extremes_of_jobs",
    "metric_history",
    "metric_series",
    "metric_summaries",
    "metric_summary",
]

_SPECIALS: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
#: Rows fetched at a time by the reads that return many.
_FETCH_SLICE: Final = 2000
#: Fewest points a downsampled series may ask for: the first and the last.
MIN_SERIES_POINTS: Final = 2


class MetricPoint(NamedTuple):
    """One point of a metric: its value at one step (epoch-seconds ``timestamp``)."""

    name: str
    value: float
    step: int
    timestamp: float


class JobMetrics(NamedTuple):
    """A job (as :meth:`Store.get_job` gives it) and the latest point of each metric."""

    job: dict[str, Any]
    metrics: list[MetricPoint]


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """A metric's whole history in figures. ``min``/``max`` include ±Inf, not NaN (None
    when no point is a number), and ``min_step``/``max_step`` are the first steps holding
    them; ``latest`` is the highest step's point."""

    name: str
    count: int
    first_step: int | None
    last_step: int | None
    min: float | None
    max: float | None
    nan_count: int
    inf_count: int
    latest: MetricPoint | None
    min_step: int | None = None
    max_step: int | None = None


def _value(value: float | None, special: str | None) -> float:
    if special is None:
        return value if value is not None else math.nan
    return _SPECIALS[special]


def _points(name: str, rows: Any) -> list[MetricPoint]:
    specials, new, cls = _SPECIALS, tuple.__new__, MetricPoint
    # The common row (finite value) costs one test and one tuple; this runs 10,000 times
    # for a full history read, so it avoids a Python call per row (tuple.__new__ is what
    # MetricPoint's own __new__ calls). `rows` comes from `.all()`: iterating a result
    # fetches row by row, several times slower.
    return [
        new(cls, (name, value if special is None else specials[special], step, ts))
        for step, value, special, ts in rows
    ]


def _of(job_id: str, name: str) -> tuple[sa.ColumnElement[bool], ...]:
    return (metrics.c.job_id == job_id, metrics.c.name == name)


_POINT_COLUMNS = (metrics.c.step, metrics.c.value, metrics.c.special, metrics.c.timestamp)


def latest_metrics(conn: sa.Connection, job_id: str) -> list[MetricPoint]:
    """The latest (highest-step) point of each metric of a job, by name;
    :class:`JobNotFoundError` if there is no such job."""
    require_job(conn, job_id)
    query = (
        sa.select(
            metric_latest.c.name,
            metric_latest.c.value,
            metric_latest.c.special,
            metric_latest.c.step,
            metric_latest.c.timestamp,
        )
        .where(metric_latest.c.job_id == job_id)
        .order_by(metric_latest.c.name)
    )
    return [MetricPoint(n, _value(v, s), step, ts) for n, v, s, step, ts in conn.execute(query)]


def latest_metrics_of_jobs(
    conn: sa.Connection, job_ids: Sequence[str]
) -> dict[str, list[MetricPoint]]:
    """The latest point of each metric of each job (jobs without metrics map to [])."""
    out: dict[str, list[MetricPoint]] = {j: [] for j in job_ids}
    if not job_ids:
        return out
    query = (
        sa.select(
            metric_latest.c.job_id,
            metric_latest.c.name,
            metric_latest.c.value,
            metric_latest.c.special,
            metric_latest.c.step,
            metric_latest.c.timestamp,
        )
        .where(metric_latest.c.job_id.in_(list(job_ids)))
        .order_by(metric_latest.c.job_id, metric_latest.c.name)
    )
    specials, new, cls = _SPECIALS, tuple.__new__, MetricPoint
    # Fetched in slices: each slice's rows die young, so 20,000 of them never live at
    # once long enough to be promoted and set off full garbage collections.
    for rows in conn.execute(query).partitions(_FETCH_SLICE):
        for job_id, name, finite, special, step, ts in rows:
            value = finite if special is None else specials[special]
            out[job_id].append(new(cls, (name, value, step, ts)))
    return out


def metric_history(
    conn: sa.Connection,
    job_id: str,
    name: str,
    *,
    index: int = 0,
    limit: int | None = DEFAULT_PAGE_LENGTH,
) -> Page[MetricPoint]:
    """A metric's points ascending by step, ``limit`` of them (all with None) from element
    ``index``. An unknown name is an empty history; an unknown job raises
    :class:`JobNotFoundError`."""
    check_paging(index, limit)
    require_job(conn, job_id)
    total = conn.execute(sa.select(sa.func.count()).select_from(metrics).where(*_of(job_id, name)))
    count = int(total.scalar_one())
    if index >= count:
        return Page([], index, limit, count)
    # The primary key (job_id, name, step) serves both the filter and the order.
    query = (
        sa.select(*_POINT_COLUMNS)
        .where(*_of(job_id, name))
        .order_by(metrics.c.step)
        .offset(index)
        .limit(limit)
    )
    return Page(_points(name, conn.execute(query).all()), index, limit, count)


def metric_series(
    conn: sa.Connection, job_id: str, name: str, *, max_points: int
) -> list[MetricPoint]:
    """At most ``max_points`` points of a metric's history for a chart, ascending by step.

    A longer history is cut into ``(max_points - 2) // 2`` buckets of consecutive points;
    each keeps its lowest and highest point, and the first and the last point of the
    history are always kept, so spikes and the global extremes survive (-inf and +inf
    count as extremes; NaN is kept only where a bucket holds nothing else). Computed in
    SQL with window functions: only the kept points leave the database.
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int):
        raise QueryError(f"max points must be an integer, got {max_points!r}")
    if max_points < MIN_SERIES_POINTS:
        raise QueryError(f"max points must be at least {MIN_SERIES_POINTS}, got {max_points}")
    require_job(conn, job_id)
    total = conn.execute(sa.select(sa.func.count()).select_from(metrics).where(*_of(job_id, name)))
    count = int(total.scalar_one())
    if count <= max_points:
        query = sa.select(*_POINT_COLUMNS).where(*_of(job_id, name)).order_by(metrics.c.step)
        return _points(name, conn.execute(query).all())
    buckets = (max_points - MIN_SERIES_POINTS) // 2
    rn = (sa.func.row_number().over(order_by=metrics.c.step) - 1).label("rn")
    numbered = sa.select(*_POINT_COLUMNS, rn).where(*_of(job_id, name)).subquery("numbered")
    step, value, special = numbered.c.step, numbered.c.value, numbered.c.special
    # Integer division in both databases (integer operands): bucket b holds the rows
    # numbered from ceil(b*count/buckets). The raw operator: SQLAlchemy's `/` means true
    # division and would cast to a float on PostgreSQL.
    bucket = (numbered.c.rn * sa.literal(buckets, sa.BigInteger)).op("/")(
        sa.literal(count, sa.BigInteger)
    )
    low = sa.case((special == "-inf", 0), (value.is_not(None), 1), (special == "inf", 2), else_=3)
    high = sa.case((special == "inf", 0), (value.is_not(None), 1), (special == "-inf", 2), else_=3)
    ranked = sa.select(
        numbered,
        sa.func.row_number()
        .over(partition_by=bucket, order_by=(low, value.asc(), step))
        .label("lo"),
        sa.func.row_number()
        .over(partition_by=bucket, order_by=(high, value.desc(), step))
        .label("hi"),
    ).subquery("ranked")
    keep = [ranked.c.rn == 0, ranked.c.rn == count - 1]
    if buckets:
        keep += [ranked.c.lo == 1, ranked.c.hi == 1]
    query = (
        sa.select(ranked.c.step, ranked.c.value, ranked.c.special, ranked.c.timestamp)
        .where(sa.or_(*keep))
        .order_by(ranked.c.step)
    )
    return _points(name, conn.execute(query).all())


def metric_summary(conn: sa.Connection, job_id: str, name: str) -> MetricSummary:
    """Count, step range, extremes (and their steps) and special-value counts of a metric;
    an unknown name is a summary of nothing."""
    require_job(conn, job_id)
    found = _summaries(conn, job_id, name)
    return found[0] if found else MetricSummary(name, 0, None, None, None, None, 0, 0, None)


def metric_summaries(conn: sa.Connection, job_id: str) -> list[MetricSummary]:
    """The summary of every metric of a job, by name (:func:`metric_summary` for each, in
    three queries whatever the number of metrics)."""
    require_job(conn, job_id)
    return _summaries(conn, job_id, None)


def _summaries(conn: sa.Connection, job_id: str, name: str | None) -> list[MetricSummary]:
    where = [metrics.c.job_id == job_id] if name is None else list(_of(job_id, name))
    special = metrics.c.special

    def count_of(value: str) -> Any:
        return sa.func.sum(sa.case((special == value, 1), else_=0))

    totals = (
        sa.select(
            metrics.c.name,
            sa.func.count(),
            sa.func.min(metrics.c.step),
            sa.func.max(metrics.c.step),
            count_of("nan"),
            count_of("inf"),
            count_of("-inf"),
        )
        .where(*where)
        .group_by(metrics.c.name)
        .order_by(metrics.c.name)
    )
    # The lowest and the highest point of each name with the first step holding it, by
    # window functions: -inf < finite < inf, NaN never an extreme.
    value = metrics.c.value
    low = sa.case((special == "-inf", 0), (value.is_not(None), 1), (special == "inf", 2), else_=3)
    high = sa.case((special == "inf", 0), (value.is_not(None), 1), (special == "-inf", 2), else_=3)
    ranked = (
        sa.select(
            metrics.c.name,
            metrics.c.step,
            value,
            special,
            sa.func.row_number()
            .over(partition_by=metrics.c.name, order_by=(low, value.asc(), metrics.c.step))
            .label("lo"),
            sa.func.row_number()
            .over(partition_by=metrics.c.name, order_by=(high, value.desc(), metrics.c.step))
            .label("hi"),
        )
        .where(*where)
        .subquery("ranked")
    )
    extremes: dict[str, dict[str, tuple[float, int]]] = {}
    query = sa.select(
        ranked.c.name, ranked.c.step, ranked.c.value, ranked.c.special, ranked.c.lo, ranked.c.hi
    ).where(sa.or_(ranked.c.lo == 1, ranked.c.hi == 1))
    for metric, step, finite, spec, lo, hi in conn.execute(query):
        if spec == "nan":  # the only kind of point left: no extremes
            continue
        point = (_value(finite, spec), step)
        if lo == 1:
            extremes.setdefault(metric, {})["min"] = point
        if hi == 1:
            extremes.setdefault(metric, {})["max"] = point
    latest_query = sa.select(
        metric_latest.c.name,
        metric_latest.c.value,
        metric_latest.c.special,
        metric_latest.c.step,
        metric_latest.c.timestamp,
    ).where(metric_latest.c.job_id == job_id)
    if name is not None:
        latest_query = latest_query.where(metric_latest.c.name == name)
    latest = {
        n: MetricPoint(n, _value(v, s), st, ts) for n, v, s, st, ts in conn.execute(latest_query)
    }
    out = []
    for metric, count, first, last, nans, pos, neg in conn.execute(totals):
        ends = extremes.get(metric, {})
        low_point, high_point = ends.get("min"), ends.get("max")
        out.append(
            MetricSummary(
                name=metric,
                count=int(count),
                first_step=first,
                last_step=last,
                min=None if low_point is None else low_point[0],
                max=None if high_point is None else high_point[0],
                nan_count=int(nans or 0),
                inf_count=int(pos or 0) + int(neg or 0),
                latest=latest.get(metric),
                min_step=None if low_point is None else low_point[1],
                max_step=None if high_point is None else high_point[1],
            )
        )
    return out


def experiment_metrics(
    conn: sa.Connection,
    experiment: str,
    *,
    search: str | None = None,
    sort_by: str | None = None,
    descending: bool | None = None,
    index: int = 0,
    limit: int | None = DEFAULT_PAGE_LENGTH,
    now: float | None = None,
) -> Page[JobMetrics]:
    """The latest metrics of each job of an experiment, paged over jobs.

    ``sort_by`` is a job field, ``metric.NAME`` or (as in Dioptra) a bare metric name;
    ``search`` is the search language of :mod:`jobtrace.store.search`. Raises
    :class:`ExperimentNotFoundError` for an unknown experiment.
    """
    require_experiment(conn, experiment)
    return find_job_metrics(
        conn,
        experiment=experiment,
        search=search,
        sort_by=sort_by,
        descending=descending,
        index=index,
        limit=limit,
        now=now,
        bare_metric_sort=True,
    )


def find_job_metrics(conn: sa.Connection, **find: Any) -> Page[JobMetrics]:
    """Jobs as :func:`~jobtrace.store.jobs.find_jobs` finds them (same arguments), each
    with the latest point of each of its metrics."""
    page = find_jobs(conn, **find)
    latest = latest_metrics_of_jobs(conn, [job["id"] for job in page.data])
    return page.map(lambda job: JobMetrics(job, latest[job["id"]]))


# -- charts ----------------------------------------------------------------------------------

#: Most runs one bucketed read may cover (a comparison's curves on one chart).
MAX_BUCKET_JOBS: Final = 50
#: Most buckets one read may ask for (about a wide screen's pixels, twice over).
MAX_BUCKETS: Final = 5000


class Bucketed(NamedTuple):
    """One run's curve in a :class:`MetricBuckets`: ``total`` points of the step range,
    drawn by ``points`` (all of them when few, else two per bucket)."""

    job_id: str
    total: int
    points: list[MetricPoint]


@dataclass(frozen=True, slots=True)
class MetricBuckets:
    """A metric of several runs cut into the same ``buckets`` equal step ranges between
    ``start`` and ``end`` (both None when no run has a point); ``exact`` when every point
    of the range is in ``series`` (no run had more than two per bucket)."""

    name: str
    start: int | None
    end: int | None
    buckets: int
    exact: bool
    series: list[Bucketed]


def _step_range(conn: sa.Connection, job_ids: Sequence[str], name: str) -> tuple[int, int] | None:
    # min() and max() alone per job: each is one seek on the primary key (job_id, name, step),
    # where a GROUP BY would read every point of a million-point history.
    low: int | None = None
    high: int | None = None
    for job_id in job_ids:
        where = _of(job_id, name)
        first = sa.select(sa.func.min(metrics.c.step)).where(*where).scalar_subquery()
        last = sa.select(sa.func.max(metrics.c.step)).where(*where).scalar_subquery()
        a, b = conn.execute(sa.select(first, last)).one()
        if a is None:
            continue
        low = a if low is None else min(low, a)
        high = b if high is None else max(high, b)
    return None if low is None or high is None else (low, high)


def metric_buckets(
    conn: sa.Connection,
    job_ids: Sequence[str],
    name: str,
    *,
    buckets: int,
    start: int | None = None,
    end: int | None = None,
) -> MetricBuckets:
    """Metric ``name`` of each of ``job_ids`` for a chart ``buckets`` pixels wide.

    The step range (``start``..``end``; by default every step any of the runs has) is cut
    into ``buckets`` equal ranges, the same for every run, so compared curves are reduced
    alike. A run with at most two points per bucket in the range comes back whole; a
    longer one as two points per bucket: its lowest value at the bucket's first step and
    its highest at its last, so a one-step spike is never averaged away (+inf and -inf are
    extremes too; a bucket of NaN only is NaN). Aggregated in SQL (one GROUP BY per run):
    only the kept points leave the database. Unknown jobs raise
    :class:`~jobtrace.errors.JobNotFoundError`.
    """
    if isinstance(buckets, bool) or not isinstance(buckets, int):
        raise QueryError(f"buckets must be an integer, got {buckets!r}")
    if not 1 <= buckets <= MAX_BUCKETS:
        raise QueryError(f"buckets must be between 1 and {MAX_BUCKETS}, got {buckets}")
    ids = list(dict.fromkeys(job_ids))
    if not ids or len(ids) > MAX_BUCKET_JOBS:
        raise QueryError(f"give between 1 and {MAX_BUCKET_JOBS} job ids, got {len(ids)}")
    for job_id in ids:
        require_job(conn, job_id)
    if start is None or end is None:
        found = _step_range(conn, ids, name)
        if found is None:
            return MetricBuckets(name, None, None, buckets, True, [Bucketed(j, 0, []) for j in ids])
        start = found[0] if start is None else start
        end = found[1] if end is None else end
    if end < start:
        raise QueryError(f"the step range is empty: start {start} is after end {end}")
    # Integer steps per bucket, rounded up: bucket b holds steps start + b*width onwards.
    width = -(-(end - start + 1) // buckets)
    series = [_bucketed(conn, job_id, name, start, end, width, buckets) for job_id in ids]
    exact = all(len(s.points) == s.total for s in series)
    return MetricBuckets(name, start, end, buckets, exact, series)


def _extremes(low: float | None, high: float | None, neg: int, pos: int) -> tuple[float, float]:
    """(min, max) of points from SQL's MIN/MAX of the finite values and whether any point
    was -inf/+inf: the infinities win; no finite value and no infinity means NaN only."""
    if neg:
        low = -math.inf
    elif low is None:
        low = math.inf if pos else math.nan
    if pos:
        high = math.inf
    elif high is None:
        high = -math.inf if neg else math.nan
    return low, high


def _bucketed(
    conn: sa.Connection, job_id: str, name: str, start: int, end: int, width: int, buckets: int
) -> Bucketed:
    in_range = (*_of(job_id, name), metrics.c.step >= start, metrics.c.step <= end)
    special = metrics.c.special
    # The raw operator: integer division in both databases (SQLAlchemy's `/` casts).
    offset = (metrics.c.step - sa.literal(start, sa.BigInteger)).self_group()
    bucket = offset.op("/")(sa.literal(width, sa.BigInteger))

    def has(kind: str) -> Any:
        return sa.func.max(sa.case((special == kind, 1), else_=0))

    query = (
        sa.select(
            sa.func.min(metrics.c.step),
            sa.func.max(metrics.c.step),
            sa.func.min(metrics.c.timestamp),
            sa.func.max(metrics.c.timestamp),
            sa.func.min(metrics.c.value),
            sa.func.max(metrics.c.value),
            has("-inf"),
            has("inf"),
            sa.func.count(),
        )
        .where(*in_range)
        .group_by(bucket)
        .order_by(sa.func.min(metrics.c.step))
    )
    # One pass over the range: the buckets and, from their counts, the total. A range that
    # fits (at most two points per bucket on average) is then read whole, which is cheap.
    rows: list[Any] = list(conn.execute(query).all())
    total = sum(int(row[-1]) for row in rows)
    if total <= 2 * buckets:
        exact = sa.select(*_POINT_COLUMNS).where(*in_range).order_by(metrics.c.step)
        return Bucketed(job_id, total, _points(name, conn.execute(exact).all()))
    points: list[MetricPoint] = []
    for first, last, t0, t1, finite_low, finite_high, neg, pos, n in rows:
        low, high = _extremes(finite_low, finite_high, neg, pos)
        points.append(MetricPoint(name, low, first, t0))
        if n > 1:
            points.append(MetricPoint(name, high, last, t1))
    return Bucketed(job_id, total, points)


def jobs_with_metrics(
    conn: sa.Connection,
    names: Sequence[str],
    *,
    experiment: str | None = None,
    status: str | None = None,
    search: str | None = None,
    sort_by: str | None = None,
    descending: bool | None = None,
    index: int = 0,
    limit: int | None = DEFAULT_PAGE_LENGTH,
    now: float | None = None,
) -> tuple[Page[JobMetrics], list[str]]:
    """A page of jobs (as :func:`~jobtrace.store.jobs.find_jobs` finds them) with the latest
    point of each metric of ``names`` they have, and the names of every metric the page's
    jobs have (a column chooser's choices): one query for the page, one for its metrics."""
    page = find_job_metrics(
        conn,
        experiment=experiment,
        status=status,
        search=search,
        sort_by=sort_by,
        descending=descending,
        index=index,
        limit=limit,
        now=now,
    )
    wanted = set(names)
    available = sorted({p.name for row in page.data for p in row.metrics})
    return page.map(
        lambda row: JobMetrics(row.job, [p for p in row.metrics if p.name in wanted])
    ), available


def metric_extremes_of_jobs(
    conn: sa.Connection, job_ids: Sequence[str]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Job id → metric name → (min, max) of its whole history (±Inf count, NaN does not;
    a history of NaN only is (nan, nan)). One GROUP BY over the jobs' points."""
    out: dict[str, dict[str, tuple[float, float]]] = {j: {} for j in job_ids}
    if not job_ids:
        return out
    special = metrics.c.special

    def has(kind: str) -> Any:
        return sa.func.max(sa.case((special == kind, 1), else_=0))

    query = (
        sa.select(
            metrics.c.job_id,
            metrics.c.name,
            sa.func.min(metrics.c.value),
            sa.func.max(metrics.c.value),
            has("-inf"),
            has("inf"),
        )
        .where(metrics.c.job_id.in_(list(job_ids)))
        .group_by(metrics.c.job_id, metrics.c.name)
    )
    for job_id, name, low, high, neg, pos in conn.execute(query):
        out[job_id][name] = _extremes(low, high, neg, pos)
    return out
