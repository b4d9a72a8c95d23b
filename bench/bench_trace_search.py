"""Trace search on a store of 1M spans: ``Store.list_traces(search=...)`` per condition.

No peer runs here (Jaeger needs Cassandra or Elasticsearch); the figure that matters is
whether a search a person types answers interactively on a big store, and the query plan
(SQLite's EXPLAIN QUERY PLAN, printed with ``--plan``) says why.

The store: 100,000 traces of 10 spans (1M spans) over the last 7 days, trace ids made as
the tracing hot path makes them (48-bit milliseconds, then random bits), 20 services (one,
``legacy``, only in the oldest 1 % of traces), 50 span names, durations log-uniform from
10 us to 2 s, one span in 200 failed. Each case lists the newest 20 matching traces (the
CLI's default) and, as the REST route does, counts every match for the page envelope.

``--write-cost`` also measures what the ``(service, trace_id)`` index costs the writer:
``Store.write`` of batches of 20,000 spans into a SQLite store already holding 200,000,
with and without that index, interleaved over 8 rounds (a ratio, which holds on a loaded
machine where absolute rates do not).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from _common import banner, format_table, median, parse_args
from jobtrace import model
from jobtrace.store import Store
from jobtrace.store import traces as trace_queries
from jobtrace.store.trace_search import TraceSearch, span_conditions

TRACES = 100_000
SPANS_PER_TRACE = 10
SERVICES = [f"svc-{i}" for i in range(19)]
NAMES = [f"op.{i}" for i in range(50)]
WEEK_NS = 7 * 86_400 * 10**9


def build(url: str, traces: int) -> None:
    rng = random.Random(7)
    now = time.time_ns()
    store = Store(url)
    batch: list[model.Record] = []
    for t in range(traces):
        start = now - WEEK_NS + WEEK_NS * t // traces
        trace_id = ((start // 1_000_000) << 80) | rng.getrandbits(80)
        legacy = t < traces // 100
        root = rng.getrandbits(64) or 1
        for s in range(SPANS_PER_TRACE):
            span_id = root if s == 0 else rng.getrandbits(64) or 1
            duration = int(10_000 * (200_000 ** rng.random()))
            failed = rng.random() < 1 / 200
            batch.append(
                (
                    model.SPAN,
                    trace_id,
                    span_id,
                    None if s == 0 else root,
                    rng.choice(NAMES),
                    start + s * 1000,
                    duration,
                    None,
                    "E" if failed else None,
                    "boom" if failed else None,
                    None,
                    "host",
                    1,
                    "MainThread",
                    "legacy" if legacy else rng.choice(SERVICES),
                )
            )
        if len(batch) >= 50_000:
            store.write(batch)
            batch = []
    if batch:
        store.write(batch)
    store.close()


CASES: list[tuple[str, TraceSearch]] = [
    ("newest (no condition)", TraceSearch()),
    ("--service svc-3", TraceSearch.parse(service="svc-3")),
    ("--service legacy (oldest 1 %)", TraceSearch.parse(service="legacy")),
    ("--name 'op.1*'", TraceSearch.parse(name="op.1*")),
    ("--min-duration 1.9s", TraceSearch.parse(min_duration="1.9s")),
    ("--error", TraceSearch.parse(error=True)),
    ("--service svc-3 --error", TraceSearch.parse(service="svc-3", error=True)),
    ("--since 1h", TraceSearch.parse(since="1h")),
    ("--until 6d (oldest day)", TraceSearch.parse(until="6d")),
    ("--service nosuch", TraceSearch.parse(service="nosuch")),
]


def write_cost(rounds: int = 8, batch: int = 20_000) -> float:
    """Median spans/s ``Store.write`` reaches with the service index over without it."""
    import statistics

    rng = random.Random(3)

    def records(n: int, first_trace: int) -> list[model.Record]:
        return [
            (model.SPAN, ((first_trace + i // 50) << 80) | 12345, rng.getrandbits(64) or 1,
             None if i % 50 == 0 else 7, "step", 1_700_000_000 * 10**9 + i * 1000, 900,
             {"k": 1}, None, None, "job-1", "bench-host", 1, "MainThread",
             f"svc-{(i // 50) % 20}")
            for i in range(n)
        ]  # fmt: skip

    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for indexed in (True, False):
            store = Store(f"sqlite:///{Path(tmp) / f'{indexed}.db'}")
            if not indexed:
                with store.engine.begin() as conn:
                    conn.exec_driver_sql("DROP INDEX ix_spans_service_trace_id")
            store.write(records(10 * batch, 10**9))  # not an empty table
            stores[indexed] = store
        for r in range(rounds):
            for indexed in (True, False) if r % 2 else (False, True):
                spans = records(batch, 2 * 10**9 + r * 10**6 + indexed * 10**5)
                t = time.perf_counter()
                stores[indexed].write(spans)
                rates[indexed].append(batch / (time.perf_counter() - t))
        for store in stores.values():
            store.close()
    return statistics.median(rates[True]) / statistics.median(rates[False])


def main() -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--plan", action="store_true", help="print each query's plan")
        parser.add_argument(
            "--write-cost", action="store_true", help="what the service index costs a write"
        )

    args = parse_args(__doc__ or "", extra=options)
    traces = TRACES // 10 if args.quick else TRACES
    plan = args.plan
    args.rounds = 3
    banner("bench_trace_search", args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'spans.db'}"
        t0 = time.perf_counter()
        build(url, traces)
        print(f"built {traces * SPANS_PER_TRACE:,} spans in {time.perf_counter() - t0:.1f} s\n")
        store = Store(url)
        rows = []
        for label, search in CASES:
            list_times, count_times = [], []
            found = 0
            for _ in range(args.rounds):
                t = time.perf_counter()
                found = len(store.list_traces(search=search, limit=20))
                list_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                store.find_traces(search=search, limit=20)
                count_times.append(time.perf_counter() - t)
            rows.append(
                [
                    label,
                    str(found),
                    f"{median(list_times) * 1000:.1f}",
                    f"{median(count_times) * 1000:.1f}",
                ]
            )
            if plan:
                with store.engine.connect() as conn:
                    ids = (
                        sa.select(trace_queries.spans.c.trace_id)
                        .where(*span_conditions(search, "sqlite"))
                        .distinct()
                        .order_by(trace_queries.spans.c.trace_id.desc())
                        .limit(20)
                    )
                    sql = str(ids.compile(conn, compile_kwargs={"literal_binds": True}))
                    for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"):
                        print(f"  {label}: {row[-1]}")
        store.close()
    print(
        format_table(
            ["search", "traces", "list ms (newest 20)", "page ms (with total count)"], rows
        )
    )
    if args.write_cost:
        ratio = write_cost()
        print(f"\nStore.write spans/s with the (service, trace_id) index / without: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
