"""Trace analysis on plain span dicts: the call tree, self time, per-name statistics, the
JSON report and OSProfiler-compatible notifications.

Every function here is pure: it takes the spans of one trace as dicts with the ``spans``
table's keys (``trace_id``, ``span_id``, ``parent_id``, ``name``, ``start_ns``,
``duration_ns``, and optionally ``info``, ``error_type``, ``error_message``, ``job_id``,
``host``, ``pid``, ``thread``, ``service``) — what :meth:`jobtrace.store.Store.get_trace` returns.

The tree. A span whose parent is not among the spans (recorded by another service, or
dropped) is the root of its subtree, as is a span caught in a parent cycle. Roots and
children are ordered by start time.

Times. A span's *inclusive* time is its duration; its *self* time is the part of it that no
child covers (the union of its children's intervals, clipped to the span, is subtracted,
so overlapping children such as concurrent tasks are not counted twice and self time is
never negative). Both are float milliseconds, as is ``offset_ms``, a span's start relative
to the trace's earliest start. Percentiles interpolate linearly between closest ranks.

The JSON report (:func:`trace_json`), in the spirit of OSProfiler's ``trace show --json``
with self time and percentiles added::

    {
      "trace_id": "0190f3…",           # 32 hex characters
      "name": "handle",                 # the root's name: the earliest parentless span,
                                        # else the earliest span
      "service": "api" | null,          # the root's service
      "services": ["api", "worker"],    # every service with a span in the trace
      "job_id": "01j…" | null,          # the root's job, else any span's
      "start": "2024-07-01T12:00:00.123456+00:00",   # earliest start, ISO 8601 UTC
      "start_ns": 1719835200123456789,
      "duration_ms": 12.5,              # latest end minus earliest start
      "span_count": 42, "error_count": 1,
      "dropped_spans": 0,               # counted by the per-trace cap on the roots
      "spans": [                        # depth-first pre-order: parents before children
        {"span_id": "…", "parent_id": "…" | null, "depth": 0, "child_count": 3,
         "name": "handle", "offset_ms": 0.0, "duration_ms": 12.5, "self_ms": 1.25,
         "start_ns": …, "duration_ns": …, "info": {…}, "error_type": null,
         "error_message": null, "job_id": …, "host": …, "pid": …, "thread": …,
         "service": "api" | null},
        …
      ],
      "stats": [                        # one entry per span name, by total_ms descending
        {"name": "db.query", "count": 10, "errors": 0, "total_ms": 8.0, "self_ms": 8.0,
         "min_ms": 0.5, "max_ms": 1.5, "p50_ms": 0.75, "p95_ms": 1.4},
        …
      ]
    }

Unlike OSProfiler's nested ``children``, spans form a flat pre-order list with a
``depth``: a deeply recursive trace would otherwise exceed JSON encoders' nesting limits
(orjson stops at 254 levels), and the list is what a waterfall draws. A root whose
``parent_id`` is not null had its parent recorded elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DROPPED_KEY",
    "SpanNode",
    "build_tree",
    "format_ms",
    "iso_utc",
    "name_stats",
    "osprofiler_messages",
    "percentile",
    "self_time_ns",
    "trace_json",
    "walk",
]

#: Key in a root span's info counting the spans a per-trace cap dropped.
DROPPED_KEY = "jobtrace.dropped_spans"

#: Info keys the tracing decorators fill; OSProfiler carries them under ``"function"``.
_FUNCTION_KEYS = ("function", "args", "kwargs", "result")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Info keys of jobtrace.compat.osprofiler: ids given to profiler.init that are not jobtrace
# ids, and the info given to stop(), which belongs on the stop message.
_OSPROFILER_BASE_ID = "osprofiler.base_id"
_OSPROFILER_PARENT_ID = "osprofiler.parent_id"
_OSPROFILER_STOP = "osprofiler.stop"


def _given_id(span: Mapping[str, Any], key: str) -> Any:
    info = span.get("info")
    return info.get(key) if isinstance(info, Mapping) else None


@dataclass(slots=True, eq=False)
class SpanNode:
    """One span in the call tree, with its children (ordered by start) and times in ns."""

    span: Mapping[str, Any]
    depth: int = 0
    children: list[SpanNode] = field(default_factory=list)
    self_ns: int = 0

    @property
    def start_ns(self) -> int:
        return int(self.span["start_ns"])

    @property
    def duration_ns(self) -> int:
        # Durations come from a monotonic clock and are never negative; a bad row must not
        # produce negative times downstream.
        return max(0, int(self.span["duration_ns"]))

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


def _parent_key(node: SpanNode) -> str | None:
    parent_id = node.span.get("parent_id")
    return None if parent_id is None else str(parent_id)


def _order(node: SpanNode) -> tuple[int, str]:
    return node.start_ns, str(node.span["span_id"])


def build_tree(spans: Iterable[Mapping[str, Any]]) -> list[SpanNode]:
    """The call tree of one trace's spans: its roots, ordered by start.

    Children are ordered by start; each node's ``depth`` and ``self_ns`` are filled in.
    A span whose parent is missing (or that sits in a parent cycle) becomes a root; a
    repeated span id keeps its first span.
    """
    nodes: dict[str, SpanNode] = {}
    for span in spans:
        nodes.setdefault(str(span["span_id"]), SpanNode(span))
    roots: list[SpanNode] = []
    for span_id, node in nodes.items():
        parent_id = _parent_key(node)
        parent = nodes.get(parent_id) if parent_id is not None and parent_id != span_id else None
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
    roots.sort(key=_order)
    if _finish(roots) < len(nodes):
        _cut_cycles(nodes, roots)
    return roots


def _cut_cycles(nodes: dict[str, SpanNode], roots: list[SpanNode]) -> None:
    """Make every parent cycle's earliest span a root (bad data from a buggy client must
    still render, not loop forever)."""
    seen = {id(n) for n in walk(roots)}
    for node in sorted(nodes.values(), key=_order):
        if id(node) in seen:
            continue
        # Every unreached span has a present parent, so climbing must end in a cycle.
        path: set[int] = set()
        current = node
        while id(current) not in path:
            path.add(id(current))
            current = nodes[str(_parent_key(current))]
        cycle = [current]
        member = nodes[str(_parent_key(current))]
        while member is not current:
            cycle.append(member)
            member = nodes[str(_parent_key(member))]
        cut = min(cycle, key=_order)
        nodes[str(_parent_key(cut))].children.remove(cut)
        roots.append(cut)
        seen.update(id(n) for n in walk([cut]))
    roots.sort(key=_order)
    _finish(roots)


def _finish(roots: list[SpanNode]) -> int:
    """Sort children, set depths and self times iteratively (traces may nest deeply);
    return the number of nodes reached."""
    count = 0
    stack = [(root, 0) for root in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        count += 1
        node.depth = depth
        node.children.sort(key=_order)
        node.self_ns = self_time_ns(node)
        stack.extend((child, depth + 1) for child in reversed(node.children))
    return count


def self_time_ns(node: SpanNode) -> int:
    """The part of ``node``'s duration not covered by any child, in nanoseconds.

    Children's intervals are clipped to the node and merged before subtracting, so
    overlapping children count once and a child outliving its parent (a task left
    running) cannot make self time negative.
    """
    start, end = node.start_ns, node.end_ns
    covered = 0
    cursor = start
    # Children are sorted by start, so one sweep merges the overlapping intervals.
    for child in sorted(node.children, key=_order):
        lo = max(child.start_ns, cursor)
        hi = min(child.end_ns, end)
        if hi > lo:
            covered += hi - lo
            cursor = hi
    return max(0, node.duration_ns - covered)


def walk(roots: Sequence[SpanNode]) -> Iterator[SpanNode]:
    """Every node under ``roots`` in depth-first pre-order (parents before children)."""
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ascending values, interpolating linearly between
    closest ranks (NumPy's default); raises ``ValueError`` for no values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0 and 100, got {q}")
    position = (len(sorted_values) - 1) * q / 100
    lo = math.floor(position)
    hi = min(lo + 1, len(sorted_values) - 1)
    fraction = position - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * fraction


def _ms(ns: int) -> float:
    return ns / 1_000_000


def name_stats(nodes: Iterable[SpanNode]) -> list[dict[str, Any]]:
    """Per span name: count, errors, total, self, min, max, p50 and p95 time (float ms),
    ordered by total time descending, then name."""
    durations: dict[str, list[int]] = {}
    self_times: dict[str, int] = {}
    errors: dict[str, int] = {}
    for node in nodes:
        name = str(node.span["name"])
        durations.setdefault(name, []).append(node.duration_ns)
        self_times[name] = self_times.get(name, 0) + node.self_ns
        errors[name] = errors.get(name, 0) + (1 if node.span.get("error_type") else 0)
    out: list[dict[str, Any]] = []
    for name, values in durations.items():
        values.sort()
        ms = [_ms(v) for v in values]
        out.append(
            {
                "name": name,
                "count": len(values),
                "errors": errors[name],
                "total_ms": _ms(sum(values)),
                "self_ms": _ms(self_times[name]),
                "min_ms": ms[0],
                "max_ms": ms[-1],
                "p50_ms": percentile(ms, 50),
                "p95_ms": percentile(ms, 95),
            }
        )
    out.sort(key=lambda s: (-s["total_ms"], s["name"]))
    return out


def format_ms(ms: float) -> str:
    """A duration in milliseconds for people: ``1234.5`` → ``'1.23 s'``, ``0.25`` → ``'250 µs'``."""
    if ms == 0:
        return "0"
    if ms >= 1000:
        return f"{ms / 1000:.{1 if ms >= 10_000 else 2}f} s"
    if ms >= 1:
        return f"{ms:.{0 if ms >= 100 else 1 if ms >= 10 else 2}f} ms"
    us = ms * 1000
    if us < 1:
        return f"{us * 1000:.0f} ns"
    return f"{us:.{0 if us >= 10 else 1}f} µs"


def iso_utc(epoch_ns: int) -> str:
    """Epoch nanoseconds as ISO 8601 in UTC with microseconds and an explicit offset."""
    return (_EPOCH + timedelta(microseconds=epoch_ns // 1000)).isoformat(timespec="microseconds")


def _dropped(span: Mapping[str, Any]) -> int:
    info = span.get("info")
    value = info.get(DROPPED_KEY) if isinstance(info, Mapping) else None
    return value if type(value) is int and value > 0 else 0


def _node_json(node: SpanNode, trace_start: int) -> dict[str, Any]:
    span = node.span
    return {
        "span_id": span["span_id"],
        "parent_id": span.get("parent_id"),
        "depth": node.depth,
        "child_count": len(node.children),
        "name": span["name"],
        "offset_ms": _ms(node.start_ns - trace_start),
        "duration_ms": _ms(node.duration_ns),
        "self_ms": _ms(node.self_ns),
        "start_ns": node.start_ns,
        "duration_ns": node.duration_ns,
        "info": span.get("info"),
        "error_type": span.get("error_type"),
        "error_message": span.get("error_message"),
        "job_id": span.get("job_id"),
        "host": span.get("host"),
        "pid": span.get("pid"),
        "thread": span.get("thread"),
        "service": span.get("service"),
    }


def trace_json(spans: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON report of one trace (the shape is in this module's docstring).

    >>> doc = trace_json(store.get_trace("0190f3"))          # doctest: +SKIP
    >>> doc["stats"][0]["name"], doc["stats"][0]["p95_ms"]   # doctest: +SKIP
    """
    if not spans:
        raise ValueError("a trace report needs at least one span")
    roots = build_tree(spans)
    nodes = list(walk(roots))
    start = min(n.start_ns for n in nodes)
    end = max(n.end_ns for n in nodes)
    # As the store's trace list does: the earliest parentless span names the trace.
    first = next((r.span for r in roots if r.span.get("parent_id") is None), roots[0].span)
    job_id = first.get("job_id")
    if job_id is None:
        job_id = next((n.span["job_id"] for n in nodes if n.span.get("job_id")), None)
    return {
        "trace_id": first["trace_id"],
        "name": first["name"],
        "service": first.get("service"),
        "services": sorted({str(n.span["service"]) for n in nodes if n.span.get("service")}),
        "job_id": job_id,
        "start": iso_utc(start),
        "start_ns": start,
        "duration_ms": _ms(end - start),
        "span_count": len(nodes),
        "error_count": sum(1 for n in nodes if n.span.get("error_type")),
        "dropped_spans": sum(_dropped(r.span) for r in roots),
        "spans": [_node_json(n, start) for n in nodes],
        "stats": name_stats(nodes),
    }


def _osprofiler_timestamp(epoch_ns: int) -> str:
    # OSProfiler's own format: UTC without an offset, microseconds, which its drivers parse
    # back with strptime("%Y-%m-%dT%H:%M:%S.%f"); an offset suffix would break them.
    moment = _EPOCH + timedelta(microseconds=epoch_ns // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _osprofiler_infos(span: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a span's info into OSProfiler's start and stop info dicts."""
    info = span.get("info")
    info = dict(info) if isinstance(info, Mapping) else {}
    # What the OSProfiler layer keeps beside a point: the caller's ids and stop() info.
    info.pop(_OSPROFILER_BASE_ID, None)
    info.pop(_OSPROFILER_PARENT_ID, None)
    stopped = info.pop(_OSPROFILER_STOP, None)
    function: dict[str, Any] = {}
    named = info.get("function")
    if isinstance(named, Mapping):
        function.update(named)
    elif named is not None:
        function["name"] = named
    for key in ("args", "kwargs", "result"):
        if key in info:
            function[key] = info[key]
    start_info = {k: v for k, v in info.items() if k not in _FUNCTION_KEYS}
    stop_info: dict[str, Any] = dict(stopped) if isinstance(stopped, Mapping) else {}
    if "result" in function:
        stop_info["function"] = {"result": function.pop("result")}
    if function:
        start_info["function"] = function
    if span.get("error_type"):
        stop_info["etype"] = span["error_type"]
        stop_info["message"] = span.get("error_message")
    # OSProfiler adds the host to every notification, and its collectors read it from there.
    start_info["host"] = stop_info["host"] = span.get("host")
    return start_info, stop_info


def _nested_events(roots: Sequence[SpanNode]) -> Iterator[tuple[SpanNode, bool]]:
    """(node, True) on entering and (node, False) on leaving each span, depth first: a
    span's start comes before its subtree's events and its stop after them."""
    stack = [(root, True) for root in reversed(roots)]
    while stack:
        node, starting = stack.pop()
        yield node, starting
        if starting:
            stack.append((node, False))
            stack.extend((child, True) for child in reversed(node.children))


def osprofiler_messages(spans: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OSProfiler notifications for a trace: a ``<name>-start`` and a ``<name>-stop``
    message per span, ordered by timestamp.

    Ids map as DESIGN.md says: ``base_id`` is the trace id, ``trace_id`` the span id and
    ``parent_id`` the parent span's id, or the trace id for a root (OSProfiler's root
    points have the base id as parent). ``info`` follows OSProfiler's decorators:
    ``function`` (``name``, ``args``, ``kwargs``) and user attributes on start,
    ``function.result`` and ``etype``/``message`` of an error on stop, ``host`` on both.
    Timestamps are UTC in OSProfiler's ``%Y-%m-%dT%H:%M:%S.%f`` format.
    """
    events: list[tuple[int, dict[str, Any]]] = []
    stop_infos: dict[int, dict[str, Any]] = {}
    # A base id given to the OSProfiler layer as text that is not a jobtrace id names the
    # whole trace, as the caller knows it.
    given_base = next((b for b in (_given_id(s, _OSPROFILER_BASE_ID) for s in spans) if b), None)
    for node, starting in _nested_events(build_tree(spans)):
        span = node.span
        trace_id = given_base or span["trace_id"]
        parent_id = _given_id(span, _OSPROFILER_PARENT_ID) or span.get("parent_id")
        if starting:
            info, stop_infos[id(node)] = _osprofiler_infos(span)
        else:
            info = stop_infos.pop(id(node))
        at = node.start_ns if starting else node.end_ns
        message = {
            "name": f"{span['name']}-{'start' if starting else 'stop'}",
            "base_id": trace_id,
            "parent_id": parent_id if parent_id is not None else trace_id,
            "trace_id": span["span_id"],
            "info": info,
            "timestamp": _osprofiler_timestamp(at),
        }
        events.append((at, message))
    # A stable sort by time: events at the same instant keep their nested order.
    events.sort(key=lambda event: event[0])
    return [message for _, message in events]
