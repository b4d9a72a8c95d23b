"""Reading traces: the store's trace queries (SQLite and PostgreSQL) and the pure analysis in
jobtrace.report.traces (tree, self time, statistics, JSON report, OSProfiler messages)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest

from jobtrace.errors import QueryError, StoreError
from jobtrace.model import FIELDS, SPAN
from jobtrace.report.traces import (
    build_tree,
    format_ms,
    name_stats,
    osprofiler_messages,
    percentile,
    trace_json,
    walk,
)
from jobtrace.store import Store

MS = 1_000_000
T0 = 1_720_000_000_000_000_000  # epoch ns: 2024-07-03T09:46:40Z

# Trace ids begin with their creation time in milliseconds, so later ids sort higher.
OLD = "01907a0000000000000000000000a001"
MID = "01907a0000010000000000000000b002"
NEW = "01907a0000020000000000000000c003"


def span(
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    start_ms: float,
    duration_ms: float,
    **extra: Any,
) -> dict[str, Any]:
    """A span dict like the store returns, times given in ms from T0."""
    data: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_id": parent_id,
        "name": name,
        "start_ns": T0 + round(start_ms * MS),
        "duration_ns": round(duration_ms * MS),
        "info": None,
        "error_type": None,
        "error_message": None,
        "job_id": None,
        "host": "web-1",
        "pid": 4242,
        "thread": "MainThread",
        "service": "web",
    }
    data.update(extra)
    return data


def record(data: dict[str, Any]) -> tuple[Any, ...]:
    """A span record tuple in the model's field order, as the recorder writes it."""
    return (SPAN, *(data[name] for name in FIELDS[SPAN]))


def sid(n: int) -> str:
    return f"{n:016x}"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def three_traces() -> list[dict[str, Any]]:
    return [
        # OLD: a root in job-a whose child fails and outlives it, and a dropped-span count.
        span(OLD, sid(1), None, "handle", 0, 10, job_id="job-a",
             info={"jobtrace.dropped_spans": 7}),
        span(OLD, sid(2), sid(1), "db.query", 2, 3, job_id="job-a", info={"sql": "select 1"}),
        span(OLD, sid(3), sid(1), "db.query", 6, 9, job_id="job-a", error_type="TimeoutError",
             error_message="took too long"),
        # MID: no parentless span (its parent lives in another service); one span in job-b.
        span(MID, sid(4), "feedfacefeedface", "remote.call", 100, 5),
        span(MID, sid(5), sid(4), "worker.step", 99, 2, job_id="job-b"),
        # NEW: a single span of job-a.
        span(NEW, sid(6), None, "tick", 200, 1, job_id="job-a"),
    ]  # fmt: skip


# -- the store --------------------------------------------------------------------------


def test_get_trace_returns_every_span_by_start_with_info_decoded(store: Store) -> None:
    spans = three_traces()
    store.write([record(s) for s in spans])
    got = store.get_trace(OLD)
    assert got == spans[:3]
    assert got is not None and got[0]["info"] == {"jobtrace.dropped_spans": 7}


def test_get_trace_accepts_a_unique_prefix(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    got = store.get_trace(MID[:14])
    assert got is not None and {s["trace_id"] for s in got} == {MID}
    assert [s["name"] for s in got] == ["worker.step", "remote.call"]


def test_get_trace_refuses_an_ambiguous_prefix(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    with pytest.raises(QueryError, match="ambiguous"):
        store.get_trace("01907a")


@pytest.mark.parametrize("unknown", ["", "zz", "01907A00000", NEW[:-1] + "f", NEW + "0"])
def test_get_trace_of_an_unknown_id_is_none(store: Store, unknown: str) -> None:
    store.write([record(s) for s in three_traces()])
    assert store.get_trace(unknown) is None


def test_list_traces_summarises_each_trace_newest_first(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    rows = store.list_traces()
    assert [r["trace_id"] for r in rows] == [NEW, MID, OLD]
    by_id = {r["trace_id"]: r for r in rows}
    assert by_id[OLD] == {
        "trace_id": OLD,
        "name": "handle",
        "service": "web",
        "job_id": "job-a",
        "start_ns": T0,
        # The failing child ends at 15 ms, after its parent: the trace lasts until then.
        "duration_ns": 15 * MS,
        "spans": 3,
        "errors": 1,
        "dropped_spans": 7,
    }
    # No parentless span: the earliest span names the trace; the root has no job, so any
    # span's job stands for the trace.
    assert by_id[MID]["name"] == "worker.step"
    assert by_id[MID]["job_id"] == "job-b"
    assert (by_id[MID]["start_ns"], by_id[MID]["duration_ns"]) == (T0 + 99 * MS, 6 * MS)
    assert (by_id[MID]["spans"], by_id[MID]["errors"], by_id[MID]["dropped_spans"]) == (2, 0, 0)


def test_list_traces_prefers_the_parentless_span_over_an_earlier_orphan(store: Store) -> None:
    store.write(
        [
            record(span(OLD, sid(1), "0123456789abcdef", "orphan", 0, 1)),
            record(span(OLD, sid(2), None, "real-root", 5, 1)),
        ]
    )
    [row] = store.list_traces()
    assert row["name"] == "real-root"


def test_list_traces_honours_the_limit(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    assert [r["trace_id"] for r in store.list_traces(limit=2)] == [NEW, MID]
    with pytest.raises(StoreError, match="limit"):
        store.list_traces(limit=0)


def test_list_traces_filters_by_job(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    assert [r["trace_id"] for r in store.list_traces(job_id="job-a")] == [NEW, OLD]
    # A trace belongs to a job when any of its spans does: here only the child.
    [row] = store.list_traces(job_id="job-b")
    assert (row["trace_id"], row["spans"]) == (MID, 2)
    assert store.list_traces(job_id="job-a", limit=1)[0]["trace_id"] == NEW
    assert store.list_traces(job_id="no-such-job") == []


def test_job_trace_ids_lists_a_jobs_traces_newest_first(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    assert store.job_trace_ids("job-a") == [NEW, OLD]
    assert store.job_trace_ids("job-b") == [MID]


def test_an_empty_store_has_no_traces(store: Store) -> None:
    assert store.list_traces() == []
    assert store.get_trace(NEW) is None


def test_a_stored_trace_makes_a_report(store: Store) -> None:
    store.write([record(s) for s in three_traces()])
    spans = store.get_trace(OLD)
    assert spans is not None
    report = trace_json(spans)
    assert (report["trace_id"], report["name"], report["job_id"]) == (OLD, "handle", "job-a")
    assert (report["span_count"], report["error_count"], report["dropped_spans"]) == (3, 1, 7)
    assert report["duration_ms"] == 15.0


# -- the tree ---------------------------------------------------------------------------


def names(roots: Any) -> list[tuple[int, str]]:
    return [(n.depth, n.span["name"]) for n in walk(roots)]


def test_the_tree_orders_roots_and_children_by_start() -> None:
    spans = [
        span(OLD, sid(1), None, "root", 0, 100),
        span(OLD, sid(2), sid(1), "late", 50, 10),
        span(OLD, sid(3), sid(1), "early", 10, 10),
        span(OLD, sid(4), sid(3), "inner", 11, 1),
        span(OLD, sid(5), None, "second-root", 200, 1),
    ]
    roots = build_tree(reversed(spans))
    assert names(roots) == [
        (0, "root"),
        (1, "early"),
        (2, "inner"),
        (1, "late"),
        (0, "second-root"),
    ]


def test_self_time_subtracts_the_union_of_overlapping_children() -> None:
    spans = [
        span(OLD, sid(1), None, "root", 0, 10),
        span(OLD, sid(2), sid(1), "a", 1, 4),  # 1..5
        span(OLD, sid(3), sid(1), "b", 3, 4),  # 3..7, overlaps a: union 1..7
        span(OLD, sid(4), sid(1), "c", 8, 1),  # 8..9
    ]
    [root] = build_tree(spans)
    assert root.self_ns == (10 - 6 - 1) * MS
    report = trace_json(spans)
    assert [(s["name"], s["duration_ms"], s["self_ms"]) for s in report["spans"]] == [
        ("root", 10.0, 3.0),
        ("a", 4.0, 4.0),
        ("b", 4.0, 4.0),
        ("c", 1.0, 1.0),
    ]


def test_self_time_clips_children_to_their_parent_and_is_never_negative() -> None:
    spans = [
        span(OLD, sid(1), None, "root", 0, 4),
        span(OLD, sid(2), sid(1), "outlives", 2, 10),  # covers 2..4 of the root
        span(OLD, sid(3), sid(1), "starts-before", -1, 2),  # covers 0..1 of the root
        span(OLD, sid(4), None, "tiny", 20, 1),
        span(OLD, sid(5), sid(4), "huge-child", 19, 50),
    ]
    report = trace_json(spans)
    self_ms = {s["name"]: s["self_ms"] for s in report["spans"]}
    assert self_ms == {
        "root": 1.0,
        "outlives": 10.0,
        "starts-before": 2.0,
        "tiny": 0.0,
        "huge-child": 50.0,
    }
    # Offsets are from the earliest start in the trace, even when a child starts first.
    offsets = {s["name"]: s["offset_ms"] for s in report["spans"]}
    assert offsets["starts-before"] == 0.0 and offsets["root"] == 1.0
    assert report["duration_ms"] == 70.0


def test_a_span_whose_parent_is_missing_roots_its_subtree() -> None:
    spans = [
        span(OLD, sid(1), None, "root", 0, 10),
        span(OLD, sid(2), sid(1), "child", 1, 2),
        span(OLD, sid(3), "ffffffffffffffff", "orphan", 5, 3),
        span(OLD, sid(4), sid(3), "orphan-child", 6, 1),
    ]
    roots = build_tree(spans)
    assert names(roots) == [(0, "root"), (1, "child"), (0, "orphan"), (1, "orphan-child")]
    report = trace_json(spans)
    orphan = report["spans"][2]
    assert (orphan["depth"], orphan["parent_id"], orphan["child_count"]) == (
        0,
        "ffffffffffffffff",
        1,
    )
    assert orphan["self_ms"] == 2.0
    # The trace is named after its parentless root, not the orphan.
    assert report["name"] == "root"


def test_parent_cycles_and_self_parents_still_make_a_tree() -> None:
    spans = [
        span(OLD, sid(1), sid(2), "x", 0, 5),
        span(OLD, sid(2), sid(3), "y", 1, 3),
        span(OLD, sid(3), sid(1), "z", 2, 1),
        span(OLD, sid(4), sid(1), "hangs-off-the-cycle", 3, 1),
        span(OLD, sid(5), sid(5), "own-parent", 9, 1),
    ]
    roots = build_tree(spans)
    # x -> y -> z -> x (child -> parent) is cut at its earliest span, x, which becomes a
    # root keeping the rest of the cycle below it.
    assert names(roots) == [
        (0, "x"),
        (1, "z"),
        (2, "y"),
        (1, "hangs-off-the-cycle"),
        (0, "own-parent"),
    ]


def test_a_repeated_span_id_keeps_the_first_span() -> None:
    spans = [span(OLD, sid(1), None, "first", 0, 1), span(OLD, sid(1), None, "again", 5, 1)]
    assert names(build_tree(spans)) == [(0, "first")]


def test_deep_recursion_makes_a_flat_serialisable_report() -> None:
    depth = 3000
    spans = [span(OLD, sid(1), None, "f", 0, depth)]
    spans += [span(OLD, sid(i + 1), sid(i), "f", i * 0.5, depth - i) for i in range(1, depth)]
    report = trace_json(spans)
    assert [s["depth"] for s in report["spans"]] == list(range(depth))
    # orjson refuses nesting deeper than 254 levels; the flat list is never nested.
    assert orjson.loads(orjson.dumps(report))["spans"][-1]["depth"] == depth - 1
    [stat] = report["stats"]
    # Each level's self time is the 0.5 ms either side of its child: together they tile
    # the root exactly.
    assert stat["count"] == depth and stat["self_ms"] == report["duration_ms"] == depth


# -- statistics -------------------------------------------------------------------------


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 50) == 10.5
    assert percentile(values, 95) == pytest.approx(19.05)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 20.0
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_name_stats_count_total_min_max_and_percentiles_per_name() -> None:
    spans = [span(OLD, sid(100), None, "root", 0, 1000)]
    spans += [span(OLD, sid(i), sid(100), "query", i * 30, i) for i in range(1, 21)]
    spans.append(span(OLD, sid(50), sid(100), "query", 900, 5, error_type="ValueError"))
    stats = {s["name"]: s for s in name_stats(walk(build_tree(spans)))}
    query = stats["query"]
    durations = sorted([*range(1, 21), 5])
    assert query["count"] == 21 and query["errors"] == 1
    assert query["total_ms"] == sum(durations)
    assert (query["min_ms"], query["max_ms"]) == (1.0, 20.0)
    assert query["p50_ms"] == durations[10]
    assert query["p95_ms"] == pytest.approx(durations[19])
    assert query["self_ms"] == query["total_ms"]
    assert stats["root"]["self_ms"] == 1000 - sum(durations)
    assert [s["name"] for s in name_stats(walk(build_tree(spans)))] == ["root", "query"]


def test_trace_json_shape() -> None:
    spans = three_traces()[:3]
    report = trace_json(spans)
    assert list(report) == [
        "trace_id",
        "name",
        "service",
        "services",
        "job_id",
        "start",
        "start_ns",
        "duration_ms",
        "span_count",
        "error_count",
        "dropped_spans",
        "spans",
        "stats",
    ]
    assert report["start"] == "2024-07-03T09:46:40.000000+00:00"
    assert datetime.fromisoformat(report["start"]).timestamp() == T0 / 1e9
    failed = report["spans"][2]
    assert failed == {
        "span_id": sid(3),
        "parent_id": sid(1),
        "depth": 1,
        "child_count": 0,
        "name": "db.query",
        "offset_ms": 6.0,
        "duration_ms": 9.0,
        "self_ms": 9.0,
        "start_ns": T0 + 6 * MS,
        "duration_ns": 9 * MS,
        "info": None,
        "error_type": "TimeoutError",
        "error_message": "took too long",
        "job_id": "job-a",
        "host": "web-1",
        "pid": 4242,
        "thread": "MainThread",
        "service": "web",
    }
    assert (report["service"], report["services"]) == ("web", ["web"])
    with pytest.raises(ValueError):
        trace_json([])


def test_format_ms_reads_well_at_every_scale() -> None:
    assert [format_ms(v) for v in (0, 0.0000004, 0.0042, 0.25, 1.5, 12.34, 250, 1234.5)] == [
        "0",
        "0 ns",
        "4.2 µs",
        "250 µs",
        "1.50 ms",
        "12.3 ms",
        "250 ms",
        "1.23 s",
    ]


# -- OSProfiler notifications -----------------------------------------------------------


def test_osprofiler_messages_pair_a_start_and_a_stop_per_span() -> None:
    spans = three_traces()[:3]
    messages = osprofiler_messages(spans)
    assert [m["name"] for m in messages] == [
        "handle-start",
        "db.query-start",
        "db.query-stop",
        "db.query-start",
        "handle-stop",
        "db.query-stop",
    ]
    assert {m["base_id"] for m in messages} == {OLD}
    root_start = messages[0]
    assert set(root_start) == {"name", "base_id", "parent_id", "trace_id", "info", "timestamp"}
    # OSProfiler's root points have the base id as their parent.
    assert (root_start["trace_id"], root_start["parent_id"]) == (sid(1), OLD)
    assert (messages[1]["trace_id"], messages[1]["parent_id"]) == (sid(2), sid(1))
    assert root_start["timestamp"] == "2024-07-03T09:46:40.000000"
    assert messages[-1]["timestamp"] == "2024-07-03T09:46:40.015000"
    stamps = [datetime.strptime(m["timestamp"], "%Y-%m-%dT%H:%M:%S.%f") for m in messages]
    assert stamps == sorted(stamps)


def test_osprofiler_info_follows_its_decorators() -> None:
    traced = span(
        OLD,
        sid(1),
        None,
        "rpc",
        0,
        1,
        info={
            "function": "app.api.create",
            "args": "(1,)",
            "kwargs": "{'x': 2}",
            "result": "'ok'",
            "tenant": "t1",
        },
    )
    failed = span(OLD, sid(2), sid(1), "db", 0.2, 0.5, error_type="DBError", error_message="gone")
    start, child_start, child_stop, stop = osprofiler_messages([traced, failed])
    assert start["info"] == {
        "tenant": "t1",
        "function": {"name": "app.api.create", "args": "(1,)", "kwargs": "{'x': 2}"},
        "host": "web-1",
    }
    assert stop["info"] == {"function": {"result": "'ok'"}, "host": "web-1"}
    assert child_start["info"] == {"host": "web-1"}
    assert child_stop["info"] == {"etype": "DBError", "message": "gone", "host": "web-1"}


def test_osprofiler_ties_at_one_instant_keep_points_nested() -> None:
    spans = [
        span(OLD, sid(1), None, "outer", 0, 2),
        span(OLD, sid(2), sid(1), "first", 0, 1),  # starts with outer
        span(OLD, sid(3), sid(1), "zero", 1, 0),  # starts and stops as "first" stops
        span(OLD, sid(4), sid(1), "last", 1, 1),  # stops with outer
    ]
    assert [m["name"] for m in osprofiler_messages(spans)] == [
        "outer-start",
        "first-start",
        "first-stop",
        "zero-start",
        "zero-stop",
        "last-start",
        "last-stop",
        "outer-stop",
    ]
