"""How resources look on the wire: camelCase keys, ISO-8601 times with an offset, special
floats as ``"nan"``/``"inf"``/``"-inf"``, and JSON rendered by orjson."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from jobtrace._clock import iso
from jobtrace.model import encode_float

if TYPE_CHECKING:
    from jobtrace.store.experiments import Experiment
    from jobtrace.store.metrics import JobMetrics, MetricPoint, MetricSummary

__all__ = [
    "JSONBody",
    "camel",
    "experiment_out",
    "float_out",
    "job_metrics_out",
    "job_out",
    "parse_time",
    "point_out",
    "snake",
    "span_out",
    "special_value",
    "summary_out",
    "trace_summary_out",
]

# Epoch seconds of 0001-01-02 and 9999-12-30 UTC: any time between has an ISO form in UTC.
_MIN_EPOCH = -62135510400.0
_MAX_EPOCH = 253402128000.0
_JOB_TIMES = frozenset({"start_time", "end_time", "last_heartbeat"})
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class JSONBody(Response):
    """A JSON response rendered by orjson (several times faster than the json module)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS, default=repr)


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


def summary_out(summary: MetricSummary) -> dict[str, Any]:
    """A metric's summary: extremes with their steps, counts and the latest point."""
    return {
        "name": summary.name,
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
