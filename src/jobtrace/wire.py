"""How resources look on the REST API's wire, both ways: camelCase keys, ISO-8601 times with
an offset, special floats as ``"nan"``/``"inf"``/``"-inf"``.

The server writes resources with the ``*_out`` functions; :class:`~jobtrace.store.remote.
RemoteStore` reads them back with the ``*_in`` functions into the very types a
:class:`~jobtrace.store.Store` returns, so a reader cannot tell a server from a database.
No web framework is imported here: a client needs none.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobtrace._clock import iso
from jobtrace.model import decode_float, encode_float

if TYPE_CHECKING:
    from jobtrace.batch.summary import BatchStats
    from jobtrace.store.experiments import Experiment
    from jobtrace.store.metrics import JobMetrics, MetricPoint, MetricSummary

__all__ = [
    "batch_stats_in",
    "batch_stats_out",
    "camel",
    "experiment_in",
    "experiment_out",
    "float_in",
    "float_out",
    "item_in",
    "item_out",
    "job_in",
    "job_metrics_in",
    "job_metrics_out",
    "job_out",
    "metric_summary_in",
    "metric_summary_out",
    "parse_time",
    "point_in",
    "point_out",
    "snake",
    "span_in",
    "span_out",
    "special_value",
    "trace_summary_out",
]

# Epoch seconds of 0001-01-02 and 9999-12-30 UTC: any time between has an ISO form in UTC.
_MIN_EPOCH = -62135510400.0
_MAX_EPOCH = 253402128000.0
_JOB_TIMES = frozenset({"start_time", "end_time", "last_heartbeat"})


@functools.cache
def camel(name: str) -> str:
    """``peak_memory_kb`` → ``peakMemoryKb``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@functools.cache
def snake(name: str) -> str:
    """``peakMemoryKb`` → ``peak_memory_kb`` (snake_case passes through)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def special_value(value: float | None, special: str | None) -> float | str | None:
    """A stored (value, special) column pair as it goes on the wire."""
    return special if special is not None else value


def job_out(row: dict[str, Any]) -> dict[str, Any]:
    """A job row as the API returns it."""
    return {camel(k): iso(v) if k in _JOB_TIMES else v for k, v in row.items()}


def experiment_out(experiment: Experiment) -> dict[str, Any]:
    """An experiment as the API returns it (``id`` is its name)."""
    return {
        "id": experiment.name,
        "name": experiment.name,
        "description": experiment.description,
        "tags": experiment.tags,
        "createdAt": iso(experiment.created_at),
        "jobCount": experiment.job_count,
    }


def point_out(point: MetricPoint) -> dict[str, Any]:
    """A metric point: ``{name, value, step, timestamp}``, specials as strings."""
    value = point.value
    return {
        "name": point.name,
        # The finite case inline: a 10,000-point history calls this 10,000 times.
        "value": value if value - value == 0.0 else encode_float(value),
        "step": point.step,
        "timestamp": iso(point.timestamp),
    }


def job_metrics_out(row: JobMetrics) -> dict[str, Any]:
    """A job as ``GET /jobs/{id}`` returns it, plus ``metrics``: its latest points."""
    out = job_out(row.job)
    out["metrics"] = [point_out(p) for p in row.metrics]
    return out


def _ns_iso(ns: int | None) -> str | None:
    return None if ns is None else iso(ns / 1e9)


def span_out(row: dict[str, Any]) -> dict[str, Any]:
    """A span: ids as hex, start as ISO time and exact nanoseconds."""
    out = {camel(k): v for k, v in row.items()}
    out["startTime"] = _ns_iso(row.get("start_ns"))
    return out


def trace_summary_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {camel(k): v for k, v in row.items()}
    out["startTime"] = _ns_iso(row.get("start_ns"))
    return out


def float_out(value: float | None) -> float | str | None:
    """A float for the wire: specials as strings (orjson would write NaN as null)."""
    return None if value is None else encode_float(value)


def parse_time(value: str | float | int | None, what: str = "timestamp") -> float | None:
    """Epoch seconds from an ISO-8601 string (an offset is required) or a number."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an ISO-8601 time or epoch seconds, got {value!r}")
    if isinstance(value, int | float):
        # Bounded to what an ISO time can say, so that every stored time can be read back.
        if not _MIN_EPOCH <= value <= _MAX_EPOCH:
            raise ValueError(f"{what} {value!r} is not epoch seconds between years 1 and 9999")
        return float(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise ValueError(f"{what} {shown!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no UTC offset; add one, e.g. +00:00 or Z")
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{what} {value!r} is out of range") from None


def float_in(value: float | int | str | None) -> float | None:
    """A float from the wire: ``"nan"``, ``"inf"``, ``"-inf"`` back to the floats."""
    if value is None:
        return None
    return decode_float(value) if isinstance(value, str) else float(value)


def job_in(doc: dict[str, Any]) -> dict[str, Any]:
    """A job as :func:`job_out` wrote it, in the store's shape (epoch-second times)."""
    return {snake(k): parse_time(v) if snake(k) in _JOB_TIMES else v for k, v in doc.items()}


def experiment_in(doc: dict[str, Any]) -> Experiment:
    """The :class:`~jobtrace.store.experiments.Experiment` :func:`experiment_out` wrote."""
    from jobtrace.store.experiments import Experiment

    created = parse_time(doc["createdAt"])
    return Experiment(
        name=doc["name"],
        description=doc.get("description"),
        tags=doc.get("tags") or {},
        created_at=0.0 if created is None else created,
        job_count=int(doc.get("jobCount") or 0),
    )


def point_in(doc: dict[str, Any]) -> MetricPoint:
    """The :class:`~jobtrace.store.metrics.MetricPoint` :func:`point_out` wrote."""
    from jobtrace.store.metrics import MetricPoint

    timestamp = parse_time(doc["timestamp"])
    value = float_in(doc["value"])
    return MetricPoint(
        doc["name"],
        math.nan if value is None else value,
        int(doc["step"]),
        0.0 if timestamp is None else timestamp,
    )


def job_metrics_in(doc: dict[str, Any]) -> JobMetrics:
    """The :class:`~jobtrace.store.metrics.JobMetrics` :func:`job_metrics_out` wrote."""
    from jobtrace.store.metrics import JobMetrics

    job = dict(doc)
    points = job.pop("metrics", None) or []
    return JobMetrics(job_in(job), [point_in(p) for p in points])


def metric_summary_out(summary: MetricSummary) -> dict[str, Any]:
    """A metric's history in figures (``GET …/metrics/{name}/summary``, and the
    ``summary`` of ``jobtrace metrics show JOB NAME --json``)."""
    return {
        "count": summary.count,
        "firstStep": summary.first_step,
        "lastStep": summary.last_step,
        "min": float_out(summary.min),
        "minStep": summary.min_step,
        "max": float_out(summary.max),
        "maxStep": summary.max_step,
        "nanCount": summary.nan_count,
        "infCount": summary.inf_count,
        "latest": None if summary.latest is None else point_out(summary.latest),
    }


def metric_summary_in(doc: dict[str, Any], name: str) -> MetricSummary:
    """The :class:`~jobtrace.store.metrics.MetricSummary` of metric ``name`` that
    :func:`metric_summary_out` wrote."""
    from jobtrace.store.metrics import MetricSummary

    latest = doc.get("latest")
    return MetricSummary(
        name=name,
        count=int(doc["count"]),
        first_step=doc.get("firstStep"),
        last_step=doc.get("lastStep"),
        min=float_in(doc.get("min")),
        max=float_in(doc.get("max")),
        nan_count=int(doc.get("nanCount") or 0),
        inf_count=int(doc.get("infCount") or 0),
        latest=None if latest is None else point_in(latest),
        min_step=doc.get("minStep"),
        max_step=doc.get("maxStep"),
    )


def span_in(doc: dict[str, Any]) -> dict[str, Any]:
    """A span (or a trace summary) as :func:`span_out` wrote it, in the store's shape: the
    exact ``start_ns`` is kept, the ISO ``startTime`` beside it dropped."""
    return {snake(k): v for k, v in doc.items() if k != "startTime"}


def item_out(row: dict[str, Any]) -> dict[str, Any]:
    """A batch item: ``startTime`` as ISO-8601 and, exactly, as ``startSeconds`` (an end
    time is the start plus the duration, so a start rounded to milliseconds would move it)."""
    out = {camel(k): v for k, v in row.items()}
    out["startTime"] = iso(row.get("start_time"))
    out["startSeconds"] = row.get("start_time")
    return out


def item_in(doc: dict[str, Any]) -> dict[str, Any]:
    """A batch item as :func:`item_out` wrote it, in the store's shape."""
    row = {snake(k): v for k, v in doc.items() if k not in ("startTime", "startSeconds")}
    row["start_time"] = doc.get("startSeconds")
    return row


def batch_stats_out(stats: BatchStats) -> dict[str, Any]:
    """A batch's aggregates (:class:`~jobtrace.batch.summary.BatchStats`), from which a
    client computes the very summary the store would; times in exact epoch seconds."""
    return {camel(k): v for k, v in stats._asdict().items()}


def batch_stats_in(doc: dict[str, Any]) -> BatchStats:
    """The :class:`~jobtrace.batch.summary.BatchStats` :func:`batch_stats_out` wrote."""
    from jobtrace.batch.summary import BatchStats

    fields = set(BatchStats._fields)
    return BatchStats(**{snake(k): v for k, v in doc.items() if snake(k) in fields})
