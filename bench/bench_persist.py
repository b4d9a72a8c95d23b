"""Persisting record batches: ``Store.write`` of every record kind vs the bare driver.

Budgets: every record kind at >= 0.8x the bare driver's ``executemany`` of the same rows
into the same table, on SQLite and on PostgreSQL; metric points at >= 200,000 records/s
on SQLite and >= 50,000 records/s on PostgreSQL; batches of 20,000.

Cases, each timed over fresh records (new job, trace, item and series ids every batch, so
every write inserts rather than updates), made as the library makes them:

- metric: one job per batch, steps increasing (written to ``metrics`` and ``metric_latest``);
- span: int ids as the tracing hot path hands them over (jobtrace formats them as hex),
  50 spans per trace, info ``{"k": 1}``;
- item: ids from ``jobtrace._ids.local_unique_id`` as ``BatchMetrics`` makes them, no info;
- series: one process's histograms and counters, distinct label sets, JSON ``data``, one
  value in 100 NaN or infinite;
- job: distinct job snapshots of one experiment, with argv, tags and params;
- mix: 50% metrics, 30% spans, 20% items, interleaved as a recorder would hand them over;
- peer: the driver alone (``sqlite3`` / ``psycopg`` ``executemany`` of a plain ``INSERT``)
  writing the same batch's rows, pre-built outside the timed region (ids as hex, JSON
  encoded, NaN/Inf split), into a bare copy of the kind's table (same columns, primary key
  and indexes, made from ``jobtrace.store.schema``) in a database of its own, one
  transaction per batch. jobtrace's rate divided by it is jobtrace's cost over the
  driver's floor: converting records to rows, its upserts, and (metric) ``metric_latest``
  and (job) the experiment row;
- end to end (SQLite): a ``Recorder`` on the SQLite URL records N metric tuples and
  ``flush()`` returns, timed as a whole (the writer thread flushes along the way).

PostgreSQL comes from ``JOBTRACE_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); the benchmark works in fresh schemas (one
for jobtrace, one for the peer) that it drops at the end, and skips PostgreSQL with a note
when the server is unreachable.
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread
from jobtrace import _config, _ids, model
from jobtrace.model import Record
from jobtrace.recorder import Recorder
from jobtrace.store import Store, schema, sqlite

BATCH = 20_000
SQLITE_BUDGET = 200_000.0
PG_BUDGET = 50_000.0
RATIO_BUDGET = 0.8
PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SPANS_PER_TRACE = 50
KINDS = ("metric", "span", "item", "series", "job")
CASES = (*KINDS, "mix")
#: The table each record kind is written to (the peer writes this one table per kind).
TABLES: dict[str, sa.Table] = {kind: schema.RECORD_TABLES[kind] for kind in KINDS}

Batch = list[Record]
#: A batch as the peer writes it: table name -> rows in the table's column order.
PeerBatch = dict[str, list[tuple[Any, ...]]]


# -- record generation (never timed) ---------------------------------------------------------


def metric_batch(n: int) -> Batch:
    job = _ids.time_ordered_id()
    now = time.time()
    return [("metric", job, "loss", step, 1.0 / (step + 1), now + step * 1e-3) for step in range(n)]


def span_batch(n: int, job: str | None = None) -> Batch:
    """Spans as the tracing hot path records them: trace and span ids as ints."""
    job = job or _ids.time_ordered_id()
    pid = os.getpid()
    start = time.time_ns()
    out: Batch = []
    trace = root = 0
    for i in range(n):
        if i % SPANS_PER_TRACE == 0:
            trace, root, parent = int(_ids.trace_id(), 16), int(_ids.span_id(), 16), None
            span = root
        else:
            span, parent = int(_ids.span_id(), 16), root
        out.append(
            (
                "span", trace, span, parent, "step", start + i * 1000, 900, {"k": 1},
                None, None, job, "bench-host", pid, "MainThread", "bench",
            )
        )  # fmt: skip
    return out


def item_batch(n: int, job: str | None = None) -> Batch:
    job = job or _ids.time_ordered_id()
    now = time.time()
    return [
        (
            "item", _ids.local_unique_id(), job, f"item-{i}", now + i * 1e-3, 0.001, 1, 3,
            1024, "success", None, None, None, None,
        )
        for i in range(n)
    ]  # fmt: skip


def series_batch(n: int) -> Batch:
    """One process's series: histograms and counters, one value in 100 NaN or infinite."""
    source = f"bench-host:{_ids.local_unique_id()}"
    now = time.time()
    specials = (math.nan, math.inf, -math.inf)
    out: Batch = []
    for i in range(n):
        labels = orjson.dumps({"path": f"/p{i}", "code": "200"}).decode()
        value = specials[i // 100 % 3] if i % 100 == 99 else i * 0.5
        kind = "counter" if i % 2 else "histogram"
        data: dict[str, Any] = {"created": now}
        if kind == "histogram":
            data.update(le=[0.1, 1.0, "inf"], cum=[i, i, i])
        name = f"requests_{i % 50}"
        out.append(("series", source, None, name, kind, None, labels, value, data, now))
    return out


def job_batch(n: int) -> Batch:
    """Distinct job snapshots (each a new job) of one experiment."""
    now = time.time()
    return [
        (
            "job", _ids.time_ordered_id(), time.time_ns(), f"train-{i}", "bench", "succeeded",
            now, now + 1.0, 1.0, 1024, 0.9, 0.1, 0, None, None, "bench-host", 1000 + i,
            ["train.py", "--lr", "0.1"], {"team": "ml"}, {"lr": 0.1, "epochs": i},
            now + 1.0, 10.0, None, None,
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


MAKERS: dict[str, Callable[[int], Batch]] = {
    "metric": metric_batch,
    "span": span_batch,
    "item": item_batch,
    "series": series_batch,
    "job": job_batch,
    "mix": mix_batch,
}


def peer_rows(batch: Batch) -> PeerBatch:
    """The rows a batch becomes, in each table's column order, made the plain way: span ids
    as hex, JSON columns encoded, NaN/±Inf in the ``special`` column."""
    out: PeerBatch = {}
    for record in batch:
        kind = record[0]
        table = TABLES[kind]
        fields = dict(zip(model.FIELDS[kind], record[1:], strict=True))
        if kind == model.SPAN:
            for name, fmt in model.SPAN_HEX_IDS:
                if type(fields[name]) is int:
                    fields[name] = format(fields[name], fmt)
        if "special" in table.c:
            value = fields["value"]
            fields["value"], fields["special"] = (
                (None, None) if value is None else model.split_float(value)
            )
        row = tuple(
            orjson.dumps(fields[c.name]).decode()
            if isinstance(c.type, sa.JSON) and fields[c.name] is not None
            else fields[c.name]
            for c in table.c
        )
        out.setdefault(table.name, []).append(row)
    return out


def insert_sql(table: sa.Table, mark: str) -> str:
    """The peer's statement: a plain INSERT of every column."""
    columns = ", ".join(f'"{c.name}"' for c in table.c)
    return f'INSERT INTO "{table.name}" ({columns}) VALUES ({", ".join([mark] * len(table.c))})'


def create_sql(dialect: sa.Dialect) -> list[str]:
    """DDL of bare copies of the tables the peer writes: the same columns, primary keys and
    indexes as jobtrace's (created in a database or schema of their own)."""
    statements = []
    for table in TABLES.values():
        statements.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip())
        statements += [
            str(sa.schema.CreateIndex(index).compile(dialect=dialect)) for index in table.indexes
        ]
    return statements


# -- timed writers ---------------------------------------------------------------------------


def store_rate(store: Store, make: Callable[[int], Batch], count: int) -> float:
    """Records/s writing ``count`` fresh batches through ``Store.write``."""
    work = [make(BATCH) for _ in range(count)]
    start = time.perf_counter()
    for batch in work:
        store.write(batch)
    return count * BATCH / (time.perf_counter() - start)


PeerWrite = Callable[[str, int], float]


def peer_writer(
    executemany: Callable[[str, Sequence[tuple[Any, ...]]], object],
    commit: Callable[[], None],
    mark: str,
) -> PeerWrite:
    """The peer's timed writer: ``write(case, count)`` -> records/s over fresh batches."""
    statements = {t.name: insert_sql(t, mark) for t in TABLES.values()}

    def write(case: str, count: int) -> float:
        work = [peer_rows(MAKERS[case](BATCH)) for _ in range(count)]
        start = time.perf_counter()
        for tables in work:
            for table, rows in tables.items():
                executemany(statements[table], rows)
            commit()
        return count * BATCH / (time.perf_counter() - start)

    return write


def sqlite_peer(path: Path) -> tuple[sqlite3.Connection, PeerWrite]:
    """A bare sqlite3 connection with jobtrace's own pragmas, and its timed writer."""
    conn = sqlite.connect(path)
    for statement in create_sql(sqlite_dialect.dialect()):
        conn.execute(statement)
    conn.commit()
    return conn, peer_writer(conn.executemany, conn.commit, "?")


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


def postgres_peer(conninfo: str) -> tuple[Any, PeerWrite]:
    """A bare psycopg connection (in a schema of its own), and its timed writer."""
    import psycopg

    conn = psycopg.connect(conninfo)
    for statement in create_sql(pg_dialect.dialect()):
        conn.execute(statement)
    conn.commit()

    def executemany(sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(sql, rows)

    return conn, peer_writer(executemany, conn.commit, "%s")


# -- reporting -------------------------------------------------------------------------------


def report_backend(
    title: str,
    results: dict[str, list[float]],
    budget: float,
    verdicts: Verdicts,
    peer_label: str,
) -> None:
    """Each kind beside the peer writing the same rows: rates, ratio, the two verdicts."""
    rows = []
    for case in CASES:
        rate, peer = median(results[case]), median(results[f"peer {case}"])
        ratio = rate / peer
        word = verdicts.check(
            f"{title} {case}: Store.write / {peer_label}",
            ratio >= RATIO_BUDGET,
            f"{ratio:.2f}x ({rate:,.0f} vs {peer:,.0f} records/s; budget >= {RATIO_BUDGET}x)",
        )
        rate_word = "-"
        if case == "metric":
            rate_word = verdicts.check(
                f"{title} metric: Store.write rate",
                rate >= budget,
                f"{rate:,.0f} records/s (budget >= {budget:,.0f})",
            )
        rows.append(
            [
                case,
                f"{rate:,.0f}",
                spread([r / 1000 for r in results[case]]) + "k",
                f"{peer:,.0f}",
                spread([r / 1000 for r in results[f"peer {case}"]]) + "k",
                f"{ratio:.2f}",
                word,
                rate_word,
            ]
        )
    print(f"-- {title}: Store.write vs {peer_label} of the same rows into the same table --")
    headers = ["kind", "jobtrace/s", "rounds", "peer/s", "rounds", "ratio", ">=0.8x", "rate"]
    print(format_table(headers, rows))
    if "e2e" in results:
        e2e, metric = median(results["e2e"]), median(results["metric"])
        word = verdicts.check(
            f"{title} recorder -> flush (metric)",
            e2e >= budget,
            f"{e2e:,.0f} records/s (budget >= {budget:,.0f})",
        )
        print(
            f"end to end, recorder -> flush (metric): {e2e:,.0f} records/s "
            f"({spread([r / 1000 for r in results['e2e']])}k) [{word}], "
            f"{e2e / metric:.2f}x Store.write metric"
        )
    print()
    sys.stdout.flush()


def cases(
    write: Callable[[str], float], peer: PeerWrite, per_round: int
) -> dict[str, Callable[[], float]]:
    """jobtrace and the peer for every case, to interleave (the peer right after jobtrace)."""
    out: dict[str, Callable[[], float]] = {}
    for case in CASES:
        out[case] = lambda case=case: write(case)  # type: ignore[misc]
        out[f"peer {case}"] = lambda case=case: peer(case, per_round)  # type: ignore[misc]
    return out


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds = 3 if args.quick else 7
    per_round = 1 if args.quick else 2  # batches of 20,000 per case per round
    e2e_n = 20_000 if args.quick else 100_000
    pg_base = os.environ.get("JOBTRACE_TEST_POSTGRES_URL", PG_DEFAULT_URL)
    pg_problem = postgres_problem(pg_base)
    banner(
        "bench_persist: Store.write of every record kind vs the bare driver, SQLite and PostgreSQL",
        args.quick,
        [
            f"{rounds} rounds x {per_round} batch(es) of {BATCH:,} records per case; "
            "record generation is not timed",
            "peer rows are pre-built; jobtrace converts records to rows inside its timed "
            "write, and also keeps metric_latest (metric) and the experiment row (job)",
        ],
    )
    verdicts = Verdicts("bench_persist")

    with tempfile.TemporaryDirectory(prefix="jt-bench-persist-") as tmp:
        directory = Path(tmp)
        # One database file per case, so each case's tables grow with its own writes only
        # (the peer and the end-to-end recorder have files of their own too).
        stores = {case: Store(f"sqlite:///{directory / case}.db") for case in CASES}
        peer_conns = {}
        peers: dict[str, PeerWrite] = {}
        for case in CASES:
            peer_conns[case], peers[case] = sqlite_peer(directory / f"peer-{case}.db")
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
            sqlite_cases = cases(
                lambda case: store_rate(stores[case], MAKERS[case], per_round),
                lambda case, count: peers[case](case, count),
                per_round,
            )
            sqlite_cases["e2e"] = lambda: end_to_end_rate(recorder, e2e_n)
            sqlite_results = interleave(sqlite_cases, rounds)
            lost = recorder.dropped + recorder.spooled
        finally:
            recorder.close()
            for store in stores.values():
                store.close()
            for conn in peer_conns.values():
                conn.close()
    report_backend("SQLite", sqlite_results, SQLITE_BUDGET, verdicts, "sqlite3 executemany")
    if lost:
        verdicts.check(
            "end to end: nothing dropped or spooled", False, f"{lost} records not written"
        )

    if pg_problem is not None:
        print(f"-- PostgreSQL: skipped, no server at {pg_base} ({pg_problem}) --")
    else:
        with (
            postgres_schema(pg_base) as (pg_url, _),
            postgres_schema(pg_base) as (_, peer_conninfo),
        ):
            pg_store = Store(pg_url)
            pg_conn, pg_peer = postgres_peer(peer_conninfo)
            try:
                pg_results = interleave(
                    cases(
                        lambda case: store_rate(pg_store, MAKERS[case], per_round),
                        pg_peer,
                        per_round,
                    ),
                    rounds,
                )
            finally:
                pg_conn.close()
                pg_store.close()
        report_backend("PostgreSQL", pg_results, PG_BUDGET, verdicts, "psycopg executemany")
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
