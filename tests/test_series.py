"""Series across processes: the pure merge (properties), the dead-source fold, and series
travelling through the recorder into the store on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

import jobtrace
from jobtrace import model
from jobtrace.instruments import Counter, Enum, Gauge, Histogram, Info, Summary, publish
from jobtrace.instruments.merge import (
    RETIRED_SOURCE,
    MergedSeries,
    dead_sources,
    fold_sources,
    merge_series,
)
from jobtrace.instruments.registry import SOURCE_SERIES, SeriesRow, process_source
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store
from jobtrace.store.series import merged_series, retire_sources, series_rows
from tests.instruments_helpers import clean_instruments

__all__ = ["clean_instruments"]

NOW = 10_000.0


def counter(source: str, value: float, at: float = NOW, labels: str = "{}") -> SeriesRow:
    return SeriesRow(source, "requests", "counter", None, labels, value, {"created": 1.0}, at)


def gauge(source: str, mode: str, value: float, at: float = NOW) -> SeriesRow:
    return SeriesRow(source, f"g_{mode}", "gauge", mode, "{}", value, {}, at)


def histogram(source: str, bounds: list[float], cum: list[int], total: float) -> SeriesRow:
    data = {"le": [model.encode_float(b) for b in bounds], "cum": cum}
    return SeriesRow(source, "latency", "histogram", None, "{}", total, data, NOW)


def heartbeat(source: str, at: float, final: bool = False) -> SeriesRow:
    data: dict[str, Any] = {"final": True} if final else {}
    return SeriesRow(source, SOURCE_SERIES, "source", None, "{}", 0.0, data, at)


def by_name(merged: list[MergedSeries]) -> dict[tuple[str, str], MergedSeries]:
    return {(m.name, m.labels): m for m in merged}


# -- the merge rules -------------------------------------------------------------------------


def test_counters_and_summaries_add_across_sources() -> None:
    rows = [
        counter("a", 3),
        counter("b", 4),
        SeriesRow("a", "payload", "summary", None, "{}", 10.0, {"count": 2}, NOW),
        SeriesRow("b", "payload", "summary", None, "{}", 5.0, {"count": 1}, NOW),
    ]
    merged = by_name(merge_series(rows, now=NOW))
    assert merged["requests", "{}"].value == 7
    assert merged["requests", "{}"].sources == 2
    assert (merged["payload", "{}"].value, merged["payload", "{}"].data["count"]) == (15, 3)


def test_gauges_merge_by_their_declared_mode() -> None:
    rows = [
        gauge("a", "sum", 1, at=NOW - 1),
        gauge("b", "sum", 2, at=NOW),
        gauge("a", "max", 1, at=NOW),
        gauge("b", "max", 5, at=NOW - 1),
        gauge("a", "min", 1, at=NOW),
        gauge("b", "min", -5, at=NOW - 1),
        gauge("a", "last", 1, at=NOW - 2),
        gauge("b", "last", 9, at=NOW - 1),
    ]
    merged = {m.name: m.value for m in merge_series(rows, now=NOW)}
    assert merged == {"g_sum": 3, "g_max": 5, "g_min": -5, "g_last": 9}


def test_live_sum_counts_only_sources_seen_recently_that_did_not_finish() -> None:
    rows = [
        gauge("alive", "live-sum", 2, at=NOW - 500),  # unchanged for long, but heartbeating
        heartbeat("alive", NOW - 1),
        gauge("silent", "live-sum", 30, at=NOW - 500),
        heartbeat("silent", NOW - 500),
        gauge("finished", "live-sum", 400, at=NOW - 1),
        heartbeat("finished", NOW - 1, final=True),
    ]
    (merged,) = merge_series(rows, now=NOW, live_window=60)
    assert merged.value == 2


def test_info_and_enum_take_the_newest_writer() -> None:
    rows = [
        SeriesRow("a", "build", "info", None, "{}", None, {"info": {"v": "1"}}, NOW - 1),
        SeriesRow("b", "build", "info", None, "{}", None, {"info": {"v": "2"}}, NOW),
        SeriesRow(
            "a", "phase", "enum", None, "{}", None, {"states": ["x", "y"], "state": "y"}, NOW
        ),
        SeriesRow("b", "phase", "enum", None, "{}", None, {"states": ["x", "y"], "state": "x"}, 1),
    ]
    merged = by_name(merge_series(rows, now=NOW))
    assert merged["build", "{}"].data["info"] == {"v": "2"}
    assert merged["phase", "{}"].data["state"] == "y"


def test_histograms_with_the_same_buckets_add_bucket_by_bucket() -> None:
    inf = math.inf
    rows = [histogram("a", [1, 2, inf], [1, 2, 3], 4.0), histogram("b", [1, 2, inf], [0, 5, 5], 6)]
    (merged,) = merge_series(rows, now=NOW)
    assert merged.data["cum"] == [1, 7, 8]
    assert merged.data["le"] == [1.0, 2.0, "inf"]
    assert merged.value == 10


def test_histograms_with_different_buckets_merge_onto_the_union_without_overstating() -> None:
    inf = math.inf
    rows = [histogram("a", [1, inf], [2, 4], 0.0), histogram("b", [2, inf], [3, 3], 0.0)]
    (merged,) = merge_series(rows, now=NOW)
    assert merged.data["le"] == [1.0, 2.0, "inf"]
    assert merged.data["cum"] == [2, 5, 7]  # a's 2 at le=2 is a lower bound; +Inf is exact


def test_a_name_whose_type_changed_resolves_to_the_newest_type() -> None:
    rows = [
        counter("old", 5, at=NOW - 10),
        gauge("new", "sum", 1, at=NOW)._replace(name="requests"),
    ]
    (merged,) = merge_series(rows, now=NOW)
    assert (merged.type, merged.value) == ("gauge", 1)


# -- properties ----------------------------------------------------------------------------------

SOURCES = st.sampled_from(["h:1:1", "h:2:1", "h:3:5", "k:1:2"])
TYPES = st.sampled_from(["counter", "gauge-sum", "gauge-max", "gauge-min", "gauge-last", "info"])
INTEGRAL = st.integers(min_value=-(2**40), max_value=2**40).map(float)


@st.composite
def series_rows_strategy(draw: Any) -> list[SeriesRow]:
    """Rows of a few sources, each (source, name, labels) once, with distinct times."""
    keys = draw(
        st.lists(
            st.tuples(SOURCES, TYPES, st.sampled_from(["{}", '{"m":"GET"}'])),
            unique=True,
            max_size=16,
        )
    )
    times = draw(
        st.lists(st.integers(0, 10**6), min_size=len(keys), max_size=len(keys), unique=True)
    )
    rows = []
    for (source, kind, labels), at in zip(keys, times, strict=True):
        value = abs(draw(INTEGRAL)) if kind == "counter" else draw(INTEGRAL)
        if kind == "info":
            rows.append(
                SeriesRow(source, kind, "info", None, labels, None, {"info": {"v": str(value)}}, at)
            )
        elif kind == "counter":
            rows.append(SeriesRow(source, kind, "counter", None, labels, value, {}, float(at)))
        else:
            mode = kind.split("-", 1)[1]
            rows.append(SeriesRow(source, kind, "gauge", mode, labels, value, {}, float(at)))
    hist_sources = draw(st.lists(SOURCES, unique=True, max_size=3))
    for source in hist_sources:
        bounds = [*sorted(draw(st.sets(st.sampled_from([0.1, 1.0, 10.0]), min_size=1))), math.inf]
        increments = draw(st.lists(st.integers(0, 50), min_size=len(bounds), max_size=len(bounds)))
        cum = [sum(increments[: i + 1]) for i in range(len(bounds))]
        rows.append(histogram(source, bounds, cum, float(sum(increments))))
    return rows


def comparable(merged: list[MergedSeries]) -> list[tuple[Any, ...]]:
    return [(m.name, m.type, m.mode, m.labels, m.value, m.data, m.updated_at) for m in merged]


@settings(max_examples=200, deadline=None)
@given(series_rows_strategy(), st.randoms())
def test_merging_in_any_order_gives_the_same_result(rows: list[SeriesRow], rnd: Any) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    assert merge_series(shuffled, now=NOW) == merge_series(rows, now=NOW)


@settings(max_examples=200, deadline=None)
@given(series_rows_strategy(), st.data())
def test_merging_is_associative_over_any_split_of_the_sources(
    rows: list[SeriesRow], data: Any
) -> None:
    """Merging a group of sources first (as the fold does) and then the rest gives the
    same as merging everything at once: a merged group stands in for its sources."""
    sources = sorted({r.source for r in rows})
    group = set(data.draw(st.lists(st.sampled_from(sources), unique=True)) if sources else [])
    inner = merge_series([r for r in rows if r.source in group], now=NOW)
    as_rows = [
        SeriesRow("group", m.name, m.type, m.mode, m.labels, m.value, m.data, m.updated_at)
        for m in inner
    ]
    outer = merge_series(as_rows + [r for r in rows if r.source not in group], now=NOW)
    assert comparable(outer) == comparable(merge_series(rows, now=NOW))


@settings(max_examples=200, deadline=None)
@given(series_rows_strategy(), st.data())
def test_folding_dead_sources_leaves_the_merge_unchanged(rows: list[SeriesRow], data: Any) -> None:
    sources = sorted({r.source for r in rows})
    dead = set(data.draw(st.lists(st.sampled_from(sources), unique=True)) if sources else [])
    folded, tombstones = fold_sources(rows, dead, now=NOW)
    after = folded + tombstones + [r for r in rows if r.source not in dead]
    assert comparable(merge_series(after, now=NOW)) == comparable(merge_series(rows, now=NOW))
    # And a second fold of more sources on top of the first still agrees.
    rest = sorted({r.source for r in after} - {RETIRED_SOURCE} - dead)
    more = set(rest[:1])
    folded2, tombstones2 = fold_sources(after, more, now=NOW)
    again = folded2 + tombstones2 + [r for r in after if r.source not in more | {RETIRED_SOURCE}]
    assert comparable(merge_series(again, now=NOW)) == comparable(merge_series(rows, now=NOW))


# -- dead sources ------------------------------------------------------------------------------


def test_dead_sources_are_the_finished_and_the_long_silent() -> None:
    rows = [
        counter("done", 1),
        heartbeat("done", NOW, final=True),
        counter("silent", 1, at=NOW - 4000),
        heartbeat("alive", NOW - 5),
        counter("alive", 1, at=NOW - 4000),
    ]
    assert dead_sources(rows, now=NOW, retire_after=3600) == {"done", "silent"}


def test_a_late_replay_of_a_retired_source_is_not_counted_twice() -> None:
    rows = [
        counter("gone", 5, at=NOW - 10),
        heartbeat("gone", NOW - 10, final=True),
        counter("b", 1),
    ]
    folded, tombstones = fold_sources(rows, {"gone"}, now=NOW)
    replayed = counter("gone", 5, at=NOW - 10)  # the spool writes the old row again
    after = [*folded, *tombstones, counter("b", 1), replayed]
    (merged,) = merge_series(after, now=NOW)
    assert merged.value == 6
    assert dead_sources(after, now=NOW, retire_after=3600) == {"gone"}  # to delete it again


def test_a_source_retired_while_only_silent_is_not_counted_twice_when_it_returns() -> None:
    # Its sink was unreachable for longer than retire_after: it was folded with what the
    # store had (10 requests), kept counting, and its spool then brought newer totals.
    def summary(source: str, total: float, count: int, at: float) -> SeriesRow:
        return SeriesRow(source, "payload", "summary", None, "{}", total, {"count": count}, at)

    def latency(source: str, cum: list[int], total: float, at: float) -> SeriesRow:
        return histogram(source, [0.1, math.inf], cum, total)._replace(updated_at=at)

    old = NOW - 4000
    rows = [
        counter("silent", 10, at=old),
        summary("silent", 4.0, 2, old),
        latency("silent", [1, 2], 0.5, old),
        gauge("silent", "sum", 3, at=old),
        heartbeat("silent", old),
        counter("live", 1),
        heartbeat("live", NOW),
    ]
    dead = dead_sources(rows, now=NOW, retire_after=3600)
    assert dead == {"silent"}
    folded, tombstones = fold_sources(rows, dead, now=NOW)
    store = [*folded, *tombstones, counter("live", 1), heartbeat("live", NOW)]
    later = NOW + 10  # the spool replays the silent source's newer rows
    store += [
        counter("silent", 15, at=later),
        summary("silent", 7.0, 3, later),
        latency("silent", [2, 4], 1.5, later),
        gauge("silent", "sum", 5, at=later),
        heartbeat("silent", later),
    ]
    expected = {
        ("requests", "{}"): (16, None),
        ("payload", "{}"): (7.0, 3),
        ("latency", "{}"): (1.5, [2, 4]),
        ("g_sum", "{}"): (5, None),
    }

    def totals(rows: list[SeriesRow]) -> dict[tuple[str, str], tuple[Any, Any]]:
        merged = by_name(merge_series(rows, now=later))
        return {key: (m.value, m.data.get("count", m.data.get("cum"))) for key, m in merged.items()}

    assert totals(store) == expected
    # Retired again, for good: the second fold keeps the totals too.
    dead = dead_sources(store, now=later + 4000, retire_after=3600)
    assert dead == {"silent", "live"}
    folded, tombstones = fold_sources(store, dead, now=later + 4000)
    store = [*folded, *tombstones, *(r for r in store if r.source not in dead | {"retired"})]
    assert totals(store) == expected


# -- through the recorder into the store ----------------------------------------------------------


def test_changed_series_reach_the_recorder_as_series_records(memory_sink: MemorySink) -> None:
    requests = Counter("requests", labels=["method"])
    idle = Gauge("idle", mode="max")
    requests.inc(2, {"method": "GET"})
    idle.set(1)
    publish()
    requests.inc(1, {"method": "GET"})  # only this series changed since
    publish()
    jobtrace.flush()
    rows = [model.to_dict(r) for r in memory_sink.records if r[0] == model.SERIES]
    data = [(r["name"], r["labels"], r["value"]) for r in rows if r["name"] != SOURCE_SERIES]
    assert data == [
        ("requests", '{"method":"GET"}', 2.0),
        ("idle", "{}", 1.0),
        ("requests", '{"method":"GET"}', 3.0),
    ]
    assert {r["source"] for r in rows} == {process_source()}
    assert len([r for r in rows if r["name"] == SOURCE_SERIES]) == 2


def test_the_recorder_tick_sends_series_from_the_writer_thread(memory_sink: MemorySink) -> None:
    from jobtrace.recorder import get_recorder

    Counter("ticks").inc()
    recorder = get_recorder()
    assert any(getattr(t, "__self__", None) is not None for t in recorder._tickers)
    for ticker in recorder._tickers:  # what the writer thread does after each flush
        ticker(time.time())
    jobtrace.flush()
    names = [r[3] for r in memory_sink.records if r[0] == model.SERIES]
    assert "ticks" in names


def write_processes(url: str, processes: int) -> None:
    """Series from ``processes`` sources (the current process's rows under other names)."""
    with Store(url) as store:
        records = []
        for i in range(processes):
            source = f"host:{100 + i}:1"
            records.append(
                (model.SERIES, source, None, "requests", "counter", None, '{"m":"GET"}',
                 float(i + 1), {"created": 1.0}, NOW - 10)
            )  # fmt: skip
            records.append(
                (model.SERIES, source, None, "in_flight", "gauge", "live-sum", "{}", 1.0, {},
                 NOW - 10)
            )  # fmt: skip
            records.append(
                (model.SERIES, source, None, "latency", "histogram", None, "{}", 0.5,
                 {"le": [1.0, "inf"], "cum": [1, 1]}, NOW - 10)
            )  # fmt: skip
            final = {"final": True} if i % 2 == 0 else {}
            records.append(
                (model.SERIES, source, None, SOURCE_SERIES, "source", None, "{}", 0.0, final,
                 NOW - 10)
            )  # fmt: skip
        store.write(records)


def test_series_reach_the_store_and_merge_there(store_url: str) -> None:
    jobtrace.configure(store_url, install_signal_handlers=False)
    Counter("requests", labels=["method"]).inc(3, {"method": "GET"})
    Gauge("temperature", mode="max").set(math.inf)
    Histogram("latency", buckets=(1,)).observe(0.5)
    Summary("payload").observe(10)
    Info("build").info({"version": "1.2"})
    Enum("phase", states=["a", "b"]).state("b")
    publish()
    assert jobtrace.flush()
    with Store(store_url) as store, store.engine.connect() as conn:
        merged = by_name(merged_series(conn))
        rows = series_rows(conn, ["requests"])
    assert merged["requests", '{"method":"GET"}'].value == 3
    assert merged["temperature", "{}"].value == math.inf  # specials survive the store
    assert merged["latency", "{}"].data["cum"] == [1, 1]
    assert merged["payload", "{}"].data["count"] == 1
    assert merged["build", "{}"].data["info"] == {"version": "1.2"}
    assert merged["phase", "{}"].data["state"] == "b"
    assert {r.name for r in rows} == {"requests", SOURCE_SERIES}


def test_retiring_sources_in_the_store_keeps_the_merge_and_bounds_the_rows(store_url: str) -> None:
    write_processes(store_url, 6)
    with Store(store_url) as store:
        with store.engine.connect() as conn:
            before = merged_series(conn, now=NOW)
        result = retire_sources(store.engine, now=NOW, retire_after=3600)
        with store.engine.connect() as conn:
            after = merged_series(conn, now=NOW)
            rows = series_rows(conn)
        again = retire_sources(store.engine, now=NOW, retire_after=3600)
    assert result.sources == [f"host:{100 + i}:1" for i in (0, 2, 4)]  # the finished ones
    assert comparable(after) == comparable(before)
    by = by_name(after)
    assert by["requests", '{"m":"GET"}'].value == 21
    assert by["in_flight", "{}"].value == 3  # live-sum: only the three still running
    retired = [r for r in rows if r.source == RETIRED_SOURCE]
    assert {r.name for r in retired} == {"requests", "latency"}
    assert len(rows) == 3 * 4 + len(retired) + 3  # live rows, retired rows, tombstones
    assert again.sources == []


def test_newer_rows_of_a_retired_source_count_once_in_the_store(store_url: str) -> None:
    write_processes(store_url, 2)  # host:100:1 finished with 1 request, host:101:1 has 2
    with Store(store_url) as store:
        assert retire_sources(store.engine, now=NOW, retire_after=3600).sources == ["host:100:1"]
        store.write(  # its spool, replayed late, had a newer total
            [(model.SERIES, "host:100:1", None, "requests", "counter", None, '{"m":"GET"}',
              4.0, {"created": 1.0}, NOW - 5)]
        )  # fmt: skip
        with store.engine.connect() as conn:
            assert by_name(merged_series(conn, now=NOW))["requests", '{"m":"GET"}'].value == 6
        assert retire_sources(store.engine, now=NOW, retire_after=3600).sources == ["host:100:1"]
        with store.engine.connect() as conn:
            assert by_name(merged_series(conn, now=NOW))["requests", '{"m":"GET"}'].value == 6


def test_a_scrape_reads_a_tombstone_in_full_only_when_its_source_came_back(
    store_url: str,
) -> None:
    write_processes(store_url, 2)
    with Store(store_url) as store:
        retire_sources(store.engine, now=NOW, retire_after=3600)

        def tombstone_data(conn: Any) -> Any:
            [tomb] = [r for r in series_rows(conn, for_merge=True) if r.type == "retired"]
            return tomb.data

        with store.engine.connect() as conn:
            # What every dead source contributed stays unread: scrapes do not slow down
            # as workers come and go.
            assert tombstone_data(conn) is None
        store.write(
            [(model.SERIES, "host:100:1", None, "requests", "counter", None, '{"m":"GET"}',
              4.0, {"created": 1.0}, NOW - 5)]
        )  # fmt: skip
        with store.engine.connect() as conn:
            assert tombstone_data(conn)["folded"]  # needed now, to count the source once


def test_a_forked_child_is_a_new_source_starting_from_zero(memory_sink: MemorySink) -> None:
    requests = Counter("requests")
    requests.inc(5)
    parent = process_source()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            child = requests.series()[0][1].value
            os.write(write, f"{process_source()}|{child}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    source, value = os.read(read, 200).decode().split("|")
    os.close(read)
    assert source != parent
    assert float(value) == 0
    assert requests.series()[0][1].value == 5


def test_the_publisher_forgets_the_cells_of_removed_series() -> None:
    from jobtrace.instruments.registry import InstrumentRegistry, SeriesPublisher

    registry = InstrumentRegistry()
    publisher = SeriesPublisher(registry)
    for round_ in range(20):  # instruments come and go, as in a plugin reloaded many times
        counter = Counter(f"short_lived_{round_}", registry=registry, labels={"k"})
        for k in range(50):
            counter.inc(1, {"k": str(k)})
        publisher.changed_records(NOW)
        registry.unregister(counter)
    publisher.changed_records(NOW)
    assert len(publisher._sent) == 0


def test_a_fold_that_keeps_failing_is_logged_once_until_it_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that is down fails every turn of the background fold: the server's log
    gets one line when the failures start and one when they end, not a traceback a turn."""
    import asyncio

    from jobtrace.server.scrape import ScrapeSettings, SourceRetirer

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    retirer = SourceRetirer(store, ScrapeSettings())
    healthy = retirer.run_once

    def down() -> bool:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    async def turns() -> None:
        retirer.run_once = down  # type: ignore[method-assign]
        for _ in range(3):
            await retirer.turn()
        retirer.run_once = healthy  # type: ignore[method-assign]
        await retirer.turn()
        await retirer.turn()

    try:
        with caplog.at_level(logging.WARNING, "jobtrace"):
            asyncio.run(turns())
    finally:
        store.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "jobtrace: folding dead sources failed (connection refused); retrying every turn",
        "jobtrace: folding dead sources works again",
    ]
    assert not any(r.exc_info for r in caplog.records)
