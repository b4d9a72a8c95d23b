"""Bounded aggregates of what the store knows, for a Prometheus scrape: jobs by name,
experiment and status; the latest metric values of current jobs; span durations by name.

Every query here is bounded twice, so a scrape costs the same on a store with a year of
history as on a new one: by a time *window* that an index can seek to (``start_time`` for
jobs; for spans the trace id, whose first 48 bits are its creation time in milliseconds),
and by a *row cap* applied before any aggregation (the newest rows of the window). Group
counts are capped as well, which bounds the label sets a scrape exposes. Each result says
whether a cap cut it short.

Aggregation happens in SQL (one ``GROUP BY`` per part, a ``SUM(CASE …)`` per histogram
bucket), never by loading rows into Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import sqlalchemy as sa

from jobtrace import model
from jobtrace.store.jobs import _stale_before
from jobtrace.store.schema import jobs, metric_latest, spans

__all__ = [
    "JOB_BUCKETS",
    "SPAN_BUCKETS",
    "JobGroup",
    "LatestMetric",
    "Rollup",
    "RollupLimits",
    "SpanGroup",
    "job_groups",
    "latest_metrics",
    "span_groups",
]

#: Upper bounds (seconds) of the job duration buckets; +Inf is implied.
JOB_BUCKETS: Final = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
#: Upper bounds (seconds) of the span duration buckets; +Inf is implied.
SPAN_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass(frozen=True)
class RollupLimits:
    """Windows (seconds) and caps of the store-derived part of a scrape."""

    #: Jobs that started within this window are counted and their durations bucketed.
    job_window: float = 86400.0
    #: Latest metric values of running jobs and of jobs that ended within this window.
    metric_window: float = 900.0
    #: Span durations of traces that began within this window.
    span_window: float = 300.0
    #: At most this many of the newest jobs / spans of a window are aggregated.
    max_jobs: int = 100_000
    max_spans: int = 200_000
    #: At most this many label sets per part (the most recently active, or busiest, kept).
    max_job_groups: int = 500
    max_metric_jobs: int = 200
    max_metric_series: int = 5_000
    max_span_names: int = 500


class Rollup(NamedTuple):
    """One part's rows, and whether a cap left something out."""

    rows: list[Any]
    truncated: bool


class JobGroup(NamedTuple):
    """Jobs of one (name, experiment, status) that started within the window."""

    name: str
    experiment: str
    status: str
    jobs: int
    #: Finished jobs (with a duration): cumulative counts at each of :data:`JOB_BUCKETS`.
    finished: int
    duration_sum: float
    cumulative: tuple[int, ...]
    #: Peak memory (bytes) of this group's most recently ended job, if known.
    last_peak_memory_bytes: float | None


class LatestMetric(NamedTuple):
    """The latest value (highest step) of one metric of one current job."""

    job_id: str
    job_name: str
    experiment: str
    name: str
    step: int
    value: float


class SpanGroup(NamedTuple):
    """Spans of one name among the traces that began within the window."""

    name: str
    spans: int
    duration_sum: float
    cumulative: tuple[int, ...]


def _bucket_sums(column: Any, bounds: Sequence[float | int]) -> list[Any]:
    return [sa.func.sum(sa.case((column <= bound, 1), else_=0)) for bound in bounds]


def _status(now: float) -> Any:
    """The status readers see: a running job with a stale heartbeat is ``lost``."""
    return sa.case(
        (sa.and_(jobs.c.status == "running", _stale_before(now)), "lost"), else_=jobs.c.status
    )


def job_groups(conn: sa.Connection, *, now: float, limits: RollupLimits) -> Rollup:
    """:class:`JobGroup` rows for the jobs that started within ``limits.job_window`` (at
    most ``limits.max_jobs`` of them, the newest; the ``max_job_groups`` groups with the
    most recent starts)."""
    capped = (
        sa.select(
            jobs.c.name,
            jobs.c.experiment,
            _status(now).label("status"),
            jobs.c.start_time,
            jobs.c.end_time,
            jobs.c.duration,
            jobs.c.peak_memory_kb,
        )
        .where(jobs.c.start_time >= now - limits.job_window)
        .order_by(jobs.c.start_time.desc())
        .limit(limits.max_jobs)
        .subquery()
    )
    keys = (capped.c.name, capped.c.experiment, capped.c.status)
    grouped = conn.execute(
        sa.select(
            *keys,
            sa.func.count(),
            sa.func.count(capped.c.duration),
            sa.func.coalesce(sa.func.sum(capped.c.duration), 0.0),
            # The number of jobs aggregated, over every group (not only those kept).
            sa.func.sum(sa.func.count()).over(),
            *_bucket_sums(capped.c.duration, JOB_BUCKETS),
        )
        .group_by(*keys)
        .order_by(sa.func.max(capped.c.start_time).desc())
        .limit(limits.max_job_groups + 1)
    ).all()
    if not grouped:
        return Rollup([], False)
    # The peak memory of each group's most recently ended job: one window-function pass.
    newest = sa.func.row_number().over(partition_by=keys, order_by=capped.c.end_time.desc())
    ranked = (
        sa.select(*keys, capped.c.peak_memory_kb, newest.label("rank"))
        .where(capped.c.end_time.is_not(None), capped.c.peak_memory_kb.is_not(None))
        .subquery()
    )
    peaks = {
        (r[0], r[1], r[2]): float(r[3]) * 1024.0
        for r in conn.execute(
            sa.select(ranked.c.name, ranked.c.experiment, ranked.c.status, ranked.c.peak_memory_kb)
            .where(ranked.c.rank == 1)
        )
    }  # fmt: skip
    rows = []
    for row in grouped[: limits.max_job_groups]:
        name, experiment, status, count, finished, total, _ = row[:7]
        cumulative = tuple(int(c or 0) for c in row[7:])
        rows.append(
            JobGroup(
                name or "", experiment or "", status, int(count), int(finished), float(total),
                (*cumulative, int(finished)), peaks.get((name, experiment, status)),
            )
        )  # fmt: skip
    scanned = int(grouped[0][6] or 0)
    return Rollup(rows, scanned >= limits.max_jobs or len(grouped) > limits.max_job_groups)


def latest_metrics(conn: sa.Connection, *, now: float, limits: RollupLimits) -> Rollup:
    """:class:`LatestMetric` rows of the jobs running now (a fresh heartbeat) and of those
    that ended within ``limits.metric_window`` (newest first, at most
    ``limits.max_metric_jobs`` jobs and ``limits.max_metric_series`` values)."""
    current = sa.or_(
        # Both branches can seek an index (status; start_time), so the OR stays cheap.
        sa.and_(jobs.c.status == "running", sa.not_(_stale_before(now))),
        sa.and_(
            jobs.c.start_time >= now - limits.job_window,
            jobs.c.end_time >= now - limits.metric_window,
        ),
    )
    chosen = conn.execute(
        sa.select(jobs.c.id, jobs.c.name, jobs.c.experiment)
        .where(current)
        .order_by(jobs.c.start_time.desc())
        .limit(limits.max_metric_jobs + 1)
    ).all()
    truncated = len(chosen) > limits.max_metric_jobs
    about = {r[0]: (r[1] or "", r[2] or "") for r in chosen[: limits.max_metric_jobs]}
    if not about:
        return Rollup([], truncated)
    found = conn.execute(
        sa.select(
            metric_latest.c.job_id,
            metric_latest.c.name,
            metric_latest.c.step,
            metric_latest.c.value,
            metric_latest.c.special,
        )
        .where(metric_latest.c.job_id.in_(list(about)))
        .order_by(metric_latest.c.job_id, metric_latest.c.name)
        .limit(limits.max_metric_series + 1)
    ).all()
    truncated = truncated or len(found) > limits.max_metric_series
    rows = []
    for job_id, name, step, value, special in found[: limits.max_metric_series]:
        number = model.decode_float(special) if special is not None else value
        if number is None:
            continue
        job_name, experiment = about[job_id]
        rows.append(LatestMetric(job_id, job_name, experiment, name, int(step), float(number)))
    return Rollup(rows, truncated)


def _trace_id_at(seconds: float) -> str:
    """The smallest trace id made at ``seconds`` (see :func:`jobtrace._ids.trace_id`)."""
    millis = min(max(int(seconds * 1000), 0), 2**48 - 1)
    return f"{millis:012x}" + "0" * 20


def span_groups(conn: sa.Connection, *, now: float, limits: RollupLimits) -> Rollup:
    """:class:`SpanGroup` rows of the traces that began within ``limits.span_window``.

    The window is a range of trace ids, so it seeks the primary key. Its upper end (a
    minute ahead, for clock skew) keeps out trace ids that carry no time, such as random
    W3C ids propagated from other tracers, which would otherwise sort "in the future".
    """
    low, high = _trace_id_at(now - limits.span_window), _trace_id_at(now + 60.0)
    capped = (
        sa.select(spans.c.name, spans.c.duration_ns)
        .where(spans.c.trace_id >= low, spans.c.trace_id < high)
        .order_by(spans.c.trace_id.desc())
        .limit(limits.max_spans)
        .subquery()
    )
    bounds_ns = [round(b * 1e9) for b in SPAN_BUCKETS]
    count = sa.func.count()
    grouped = conn.execute(
        sa.select(
            capped.c.name,
            count,
            sa.func.coalesce(sa.func.sum(capped.c.duration_ns), 0),
            sa.func.sum(count).over(),
            *_bucket_sums(capped.c.duration_ns, bounds_ns),
        )
        .group_by(capped.c.name)
        .order_by(count.desc(), capped.c.name)
        .limit(limits.max_span_names + 1)
    ).all()
    rows = []
    for name, n, total_ns, _, *cumulative in grouped[: limits.max_span_names]:
        counts = tuple(int(c or 0) for c in cumulative)
        rows.append(SpanGroup(name, int(n), float(total_ns) / 1e9, (*counts, int(n))))
    scanned = int(grouped[0][3] or 0) if grouped else 0
    return Rollup(rows, scanned >= limits.max_spans or len(grouped) > limits.max_span_names)
