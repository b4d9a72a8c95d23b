"""Persisting record batches: ``Store(url).write(batch)`` on SQLite and PostgreSQL.

Budgets: SQLite >= 200,000 records/s, PostgreSQL >= 50,000 records/s, in batches of 20,000.

Cases, each timed over fresh records (new job, trace and item ids every batch, so every
write inserts rather than updates):

- metric: one job per batch, steps increasing (written to ``metrics`` and ``metric_latest``);
- span: W3C-sized ids from ``jobtrace._ids``, 50 spans per trace, info ``{"k": 1}``;
- item: time-ordered ids from ``jobtrace._ids``, no info;
- mix: 50% metrics, 30% spans, 20% items, interleaved as a recorder would hand them over;
- peer: the driver alone (``sqlite3`` / ``psycopg`` ``executemany`` of plain INSERTs) writing
  the same metric rows, pre-built, into a bare copy of the ``metrics`` table, one
  transaction per batch: jobtrace's metric rate divided by it is jobtrace's cost over the
  driver's floor;
- end to end (SQLite): a ``Recorder`` on the SQLite URL records N metric tuples and
  ``flush()`` returns, timed as a whole (the writer thread flushes along the way).

PostgreSQL comes from ``JOBTRACE_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the benchmark works in a fresh schema that it
drops at the end, and skips PostgreSQL with a note when the server is unreachable.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread
from jobtrace import _config, _ids
from jobtrace.model import Record
from jobtrace.recorder import Recorder
from jobtrace.store import Store, schema, sqlite

BATCH = 20_000
SQLITE_BUDGET = 200_000.0
PG_BUDGET = 50_000.0
PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SPANS_PER_TRACE = 50
PEER_TABLE = "bare_metrics"
CASES = ("metric", "span", "item", "mix")
PEER_SQL = (
    f"INSERT INTO {PEER_TABLE} (job_id, name, step, value, special, timestamp) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
)

Batch = list[Record]


# -- record generation (never timed) ---------------------------------------------------------


def metric_batch(n: int) -> Batch:
    job = _ids.time_ordered_id()
    now = time.time()
    return [("metric", job, "loss", step, 1.0 / (step + 1), now + step * 1e-3) for step in range(n)]


def span_batch(n: int, job: str | None = None) -> Batch:
    job = job or _ids.time_ordered_id()
    pid = os.getpid()
    start = time.time_ns()
    out: Batch = []
    trace = root = ""
    for i in range(n):
        if i % SPANS_PER_TRACE == 0:
            trace, root, parent = _ids.trace_id(), _ids.span_id(), None
            span = root
        else:
            span, parent = _ids.span_id(), root
        out.append(
            (
                "span", trace, span, parent, "step", start + i * 1000, 900, {"k": 1},
                None, None, job, "bench-host", pid, "MainThread",
            )
        )  # fmt: skip
    return out


def item_batch(n: int, job: str | None = None) -> Batch:
    job = job or _ids.time_ordered_id()
    now = time.time()
    return [
        (
            "item", _ids.time_ordered_id(), job, f"item-{i}", now + i * 1e-3, 0.001, 1, 3,
            1024, "success", None, None, None, None,
        )
        for i in range(n)
    ]  # fmt: skip


def mix_batch(n: int) -> Batch:
    """Half metrics, 30% spans, 20% items, interleaved in a repeating 10-record pattern."""
    metrics = iter(metric_batch(n // 2 + 10))
    job = metric_batch(1)[0][1]
    spans = iter(span_batch(n * 3 // 10 + 10, job))
    items = iter(item_batch(n // 5 + 10, job))
    pattern = "msmimsmims"  # 5 metrics, 3 spans, 2 items
    sources = {"m": metrics, "s": spans, "i": items}
    return [next(sources[pattern[i % len(pattern)]]) for i in range(n)]


def batches(make: Callable[[int], Batch], count: int) -> list[Batch]:
    return [make(BATCH) for _ in range(count)]


# -- timed writers ---------------------------------------------------------------------------


def store_rate(store: Store, make: Callable[[int], Batch], count: int) -> float:
    """Records/s writing ``count`` fresh batches through ``Store.write``."""
    work = batches(make, count)
    start = time.perf_counter()
    for batch in work:
        store.write(batch)
    return count * BATCH / (time.perf_counter() - start)


def peer_rows(count: int) -> list[list[tuple[Any, ...]]]:
    """Metric rows in the table's column order (special is None), built before timing."""
    return [
        [(r[1], r[2], r[3], r[4], None, r[5]) for r in metric_batch(BATCH)] for _ in range(count)
    ]


def sqlite_peer(path: Path) -> tuple[sqlite3.Connection, Callable[[int], float]]:
    """A bare sqlite3 connection with jobtrace's own pragmas, and its timed writer."""
    conn = sqlite.connect(path)
    conn.execute(create_peer_table_sql(sqlite_dialect.dialect()))
    conn.commit()
    sql = PEER_SQL.format(p="?")

    def write(count: int) -> float:
        work = peer_rows(count)
        start = time.perf_counter()
        for rows in work:
            conn.executemany(sql, rows)
            conn.commit()
        return count * BATCH / (time.perf_counter() - start)

    return conn, write


def create_peer_table_sql(dialect: sa.Dialect) -> str:
    """DDL of a table identical to jobtrace's ``metrics`` table, named ``bare_metrics``."""
    table = schema.metrics.to_metadata(sa.MetaData(), name=PEER_TABLE)
    return str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip()


def end_to_end_rate(recorder: Recorder, n: int) -> float:
    """Records/s from the first ``record`` call until ``flush()`` returns."""
    job = _ids.time_ordered_id()
    now = time.time()
    work = [("metric", job, "loss", step, 0.5, now) for step in range(n)]
    record = recorder.record
    start = time.perf_counter()
    for rec in work:
        record(rec)
    recorder.flush()
    return n / (time.perf_counter() - start)


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_problem(url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def postgres_schema(base_url: str) -> Iterator[tuple[str, str]]:
    """A fresh schema: yields (jobtrace store URL, psycopg conninfo URL), both confined to it."""
    import psycopg

    name = f"jt_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}options=-csearch_path%3D{name}"
    try:
        yield url, url
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def postgres_peer(conninfo: str) -> tuple[Any, Callable[[int], float]]:
    import psycopg

    conn = psycopg.connect(conninfo)
    conn.execute(create_peer_table_sql(pg_dialect.dialect()))
    conn.commit()
    sql = PEER_SQL.format(p="%s")

    def write(count: int) -> float:
        work = peer_rows(count)
        start = time.perf_counter()
        for rows in work:
            with conn.cursor() as cur:
                cur.executemany(sql, rows)
            conn.commit()
        return count * BATCH / (time.perf_counter() - start)

    return conn, write


# -- reporting -------------------------------------------------------------------------------


def report_backend(
    title: str,
    results: dict[str, list[float]],
    budget: float,
    verdicts: Verdicts,
    peer_label: str,
) -> None:
    peer = median(results["peer"])
    rows = []
    for key in ("metric", "span", "item", "mix", "e2e", "peer"):
        if key not in results:
            continue
        rate = median(results[key])
        if key == "peer":
            label, ratio, word = f"{peer_label} (peer)", "1.00", "-"
        else:
            label = "recorder -> flush (metric)" if key == "e2e" else f"Store.write {key}"
            ratio = f"{rate / peer:.2f}"
            word = verdicts.check(
                f"{title} {label}",
                rate >= budget,
                f"{rate:,.0f} records/s (budget >= {budget:,.0f}), {rate / peer:.2f}x {peer_label}",
            )
        rows.append(
            [label, f"{rate:,.0f}", spread([r / 1000 for r in results[key]]) + "k", ratio, word]
        )
    print(f"-- {title} (budget >= {budget:,.0f} records/s) --")
    print(format_table(["case", "records/s", "rounds min..max", "vs peer", "budget"], rows))
    metric = median(results["metric"])
    print(
        f"jobtrace metric writes run at {metric / peer:.2f}x the bare driver "
        f"({peer / metric:.2f}x the time per record)"
    )
    if "e2e" in results:
        e2e = median(results["e2e"])
        print(f"end to end through the recorder: {e2e / metric:.2f}x Store.write metric")
    print()
    sys.stdout.flush()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds = 3 if args.quick else 7
    per_round = 1 if args.quick else 2  # batches of 20,000 per case per round
    e2e_n = 20_000 if args.quick else 100_000
    pg_base = os.environ.get("JOBTRACE_TEST_POSTGRES_URL", PG_DEFAULT_URL)
    pg_problem = postgres_problem(pg_base)
    banner(
        "bench_persist: Store.write on SQLite and PostgreSQL vs the bare driver",
        args.quick,
        [
            f"{rounds} rounds x {per_round} batch(es) of {BATCH:,} records per case; "
            "record generation is not timed",
            "peer rows are pre-built; jobtrace converts records to rows, and also keeps "
            "metric_latest, inside its timed write",
        ],
    )
    verdicts = Verdicts("bench_persist")

    with tempfile.TemporaryDirectory(prefix="jt-bench-persist-") as tmp:
        directory = Path(tmp)
        # One database file per case, so each case's tables grow with its own writes only
        # (the peer and the end-to-end recorder have files of their own too).
        stores = {kind: Store(f"sqlite:///{directory / kind}.db") for kind in CASES}
        peer_conn, peer_write = sqlite_peer(directory / "peer.db")
        e2e_settings = _config.resolve(
            url=f"sqlite:///{directory / 'e2e.db'}",
            directory=directory / "jt",
            install_signal_handlers=False,
            env={},
        )
        recorder = Recorder(e2e_settings)
        recorder.record(metric_batch(1)[0])  # opens (and migrates) the store before timing
        recorder.flush()
        try:
            sqlite_results = interleave(
                {
                    "metric": lambda: store_rate(stores["metric"], metric_batch, per_round),
                    "peer": lambda: peer_write(per_round),
                    "span": lambda: store_rate(stores["span"], span_batch, per_round),
                    "item": lambda: store_rate(stores["item"], item_batch, per_round),
                    "mix": lambda: store_rate(stores["mix"], mix_batch, per_round),
                    "e2e": lambda: end_to_end_rate(recorder, e2e_n),
                },
                rounds,
            )
            lost = recorder.dropped + recorder.spooled + recorder.lost
        finally:
            recorder.close()
            for store in stores.values():
                store.close()
            peer_conn.close()
    report_backend("SQLite", sqlite_results, SQLITE_BUDGET, verdicts, "sqlite3 executemany")
    if lost:
        verdicts.check(
            "end to end: nothing dropped or spooled", False, f"{lost} records not written"
        )

    if pg_problem is not None:
        print(f"-- PostgreSQL: skipped, no server at {pg_base} ({pg_problem}) --")
    else:
        with postgres_schema(pg_base) as (pg_url, conninfo):
            pg_store = Store(pg_url)
            pg_conn, pg_peer_write = postgres_peer(conninfo)
            try:
                pg_results = interleave(
                    {
                        "metric": lambda: store_rate(pg_store, metric_batch, per_round),
                        "peer": lambda: pg_peer_write(per_round),
                        "span": lambda: store_rate(pg_store, span_batch, per_round),
                        "item": lambda: store_rate(pg_store, item_batch, per_round),
                        "mix": lambda: store_rate(pg_store, mix_batch, per_round),
                    },
                    rounds,
                )
            finally:
                pg_conn.close()
                pg_store.close()
        report_backend("PostgreSQL", pg_results, PG_BUDGET, verdicts, "psycopg executemany")
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
