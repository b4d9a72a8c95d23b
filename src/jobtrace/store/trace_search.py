"""Trace search, as Jaeger's search form has it: service, span name, duration, error, time.

A trace matches when **one of its spans** meets every condition given (Jaeger's rule): a
trace whose ``db.query`` span took 300 ms and whose root is named ``handle`` matches
``name="db.*", min_duration=250 ms`` but not ``name="handle", min_duration=250 ms`` unless
the root took that long too. The same :class:`TraceSearch` serves the ``Store`` API, the
``jobtrace trace list`` options and the REST ``/traces`` query parameters, and
:meth:`TraceSearch.parse` turns the text all three accept (``250ms``, ``1.5s``, ISO times,
``1h`` ago) into it, or raises :class:`~jobtrace.errors.QueryError` naming the bad value.

How it runs (see :func:`span_conditions` and :func:`jobtrace.store.traces.list_traces`):
the matching trace ids are taken from a walk of the spans' primary key from the newest
trace down, which stops at the page's last trace; only those traces are then summarised.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from jobtrace.errors import QueryError
from jobtrace.store.schema import spans

__all__ = ["TraceSearch", "parse_duration", "parse_time", "span_conditions"]

#: Nanoseconds per unit of a duration, as Jaeger's form and Go's time.ParseDuration spell them.
_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d)\s*", re.IGNORECASE)
_UNIT_LIST = "ns, us, ms, s, m, h, d"


def parse_duration(text: str, what: str = "duration") -> int:
    """Nanoseconds from ``250ms``, ``1.5s``, ``2m``, ``1h``, ``500us``, ``100ns``, ``3d``.

    A number needs its unit (``250`` alone could mean seconds or milliseconds)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise QueryError(
            f"{what} {shown!r} is not a duration; give a number and a unit "
            f"({_UNIT_LIST}), e.g. 250ms or 1.5s"
        )
    return round(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_time(text: str, what: str = "time", *, now: float | None = None) -> int:
    """Epoch nanoseconds from an ISO 8601 time (``2026-12-07T10:00:00Z``; without an offset
    it is local time, as ``date`` prints it) or a time ago (``90s``, ``30m``, ``1h``, ``2d``)."""
    text = text.strip()
    if _DURATION.fullmatch(text):
        ago = parse_duration(text, what)
        return int((time.time() if now is None else now) * 1e9) - ago
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise QueryError(
            f"{what} {shown!r} is neither an ISO 8601 time (2026-12-07T10:00:00Z) "
            f"nor a time ago with a unit ({_UNIT_LIST}: 1h means an hour ago)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time, as the CLI prints start times
    return int(parsed.timestamp() * 1e9)


@dataclass(frozen=True)
class TraceSearch:
    """Conditions a trace's span must meet together (all optional; none: every trace).

    ``name`` is a glob (``*`` any text, ``?`` one character; case-sensitive, as span names
    are). Durations are nanoseconds; ``since``/``until`` are epoch nanoseconds bounding the
    span's start. ``error`` keeps only spans that ended with an error.
    """

    service: str | None = None
    name: str | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    error: bool = False
    since_ns: int | None = None
    until_ns: int | None = None
    job_id: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        service: str | None = None,
        name: str | None = None,
        min_duration: str | None = None,
        max_duration: str | None = None,
        error: bool = False,
        since: str | None = None,
        until: str | None = None,
        job_id: str | None = None,
        now: float | None = None,
    ) -> TraceSearch:
        """A search from the text a user types (the CLI's options, the REST parameters)."""
        search = cls(
            service=service or None,
            name=name or None,
            min_duration_ns=None
            if not min_duration
            else parse_duration(min_duration, "minimum duration"),
            max_duration_ns=None
            if not max_duration
            else parse_duration(max_duration, "maximum duration"),
            error=error,
            since_ns=None if not since else parse_time(since, "since", now=now),
            until_ns=None if not until else parse_time(until, "until", now=now),
            job_id=job_id or None,
        )
        search.check()
        return search

    def check(self) -> None:
        """Raise :class:`QueryError` for a search no trace could match by construction."""
        low, high = self.min_duration_ns, self.max_duration_ns
        if low is not None and high is not None and low > high:
            raise QueryError("the minimum duration is above the maximum duration")
        since, until = self.since_ns, self.until_ns
        if since is not None and until is not None and since > until:
            raise QueryError("since is after until")

    def __bool__(self) -> bool:
        return any(
            value not in (None, False)
            for value in (
                self.service,
                self.name,
                self.min_duration_ns,
                self.max_duration_ns,
                self.error,
                self.since_ns,
                self.until_ns,
                self.job_id,
            )
        )


def _glob(column: sa.ColumnElement[Any], pattern: str, dialect: str) -> Any:
    """``column`` matches the glob ``pattern`` (``*`` and ``?``), case-sensitively on both
    databases (SQLite's LIKE ignores ASCII case, PostgreSQL's does not)."""
    if "*" not in pattern and "?" not in pattern:
        return column == pattern  # equality can use an index
    if dialect == "sqlite":
        # GLOB is SQLite's case-sensitive LIKE; "[" opens a character class there.
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    like = (
        pattern.replace("\\", "\\\\")
        .replace("%", "\\%")
        .replace("_", "\\_")
        .replace("*", "%")
        .replace("?", "_")
    )
    return column.like(like, escape="\\")


def span_conditions(search: TraceSearch, dialect: str, table: sa.FromClause = spans) -> list[Any]:
    """The WHERE conditions one span of a matching trace meets (``table``: the spans table
    or an alias of it)."""
    c = table.c
    out: list[Any] = []
    if search.service is not None:
        out.append(c.service == search.service)
    if search.name is not None:
        out.append(_glob(c.name, search.name, dialect))
    if search.min_duration_ns is not None:
        out.append(c.duration_ns >= search.min_duration_ns)
    if search.max_duration_ns is not None:
        out.append(c.duration_ns <= search.max_duration_ns)
    if search.error:
        out.append(c.error_type.is_not(None))
    if search.since_ns is not None:
        out.append(c.start_ns >= search.since_ns)
    if search.until_ns is not None:
        out.append(c.start_ns <= search.until_ns)
    if search.job_id is not None:
        out.append(c.job_id == search.job_id)
    return out
