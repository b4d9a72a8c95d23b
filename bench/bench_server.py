"""HTTP batch ingest: metric points, spans and items sent by the ``http://`` sink to
``jobtrace serve``.

Budgets: >= 50,000 metric points/s and >= 50,000 spans/s on loopback (DESIGN.md §7, issue
11), server and client on the same 2-core machine.

Cases, each timed over fresh records (new job, trace and item ids every batch, so every
write inserts), made by ``bench_persist.py``'s generators as the library makes them:

- http metric / span / item: ``HTTPSink.write`` of 20,000 records, as the recorder's writer
  thread does — encoding, one POST to ``/api/v1/batches``, the server decoding, checking
  and storing them in one transaction, the reply;
- direct metric / span / item: ``Store.write`` of the same kind of batches in this process,
  no HTTP — the floor the server stands on; http divided by it is the share of the store's
  own rate the HTTP hop keeps;
- peer, 1 per request: the same points posted one per request over the same keep-alive
  connection, as a client logging each metric with its own call does (Dioptra's
  ``append_metric_by_id``, MLflow's ``log_metric``). MLflow itself is not installed in the
  bench environment; on this machine its ``log_batch`` into a local SQLite store measured
  ~7,500 points/s and ``log_metric`` 5.4 ms per point (issue 4);
- append_metric_by_id: the same, through the client and the metric endpoint
  ``POST /api/v1/jobs/{id}/metrics`` (validated by its own model, checked against the job);
- 10k-step history over HTTP (not a budget; MLflow's ``get_metric_history`` took 493 ms
  here): ``client.jobs.iter_metric_snapshots`` following ``next`` over ten pages of 1,000.

Each http case also notes the CPU time the server process (all threads) and the client
spent per record, printed with the rate they alone would allow (information, not a verdict:
on a shared machine the wall-clock rates fall with everyone else's load).

The server runs as ``jobtrace serve`` in a subprocess on a free loopback port. PostgreSQL
comes from ``JOBTRACE_TEST_POSTGRES_URL`` as in ``bench_persist.py``, and is skipped with a
note when unreachable.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from _common import (
    Verdicts,
    banner,
    clean_env,
    format_table,
    interleave,
    median,
    parse_args,
    spread,
)
from bench_persist import (
    PG_DEFAULT_URL,
    item_batch,
    metric_batch,
    postgres_problem,
    postgres_schema,
    span_batch,
)
from jobtrace import _ids, model
from jobtrace.client import Client
from jobtrace.sinks.http import HTTPSink
from jobtrace.store import Store

BATCH = 20_000
BUDGET = 50_000.0
BUDGETED = ("metric", "span")  # kinds with a budget (items are printed for information)
SINGLES = 300  # points posted one per request per round
HISTORY = 10_000  # steps of the history read back over HTTP


@contextmanager
def served(store_url: str, directory: Path) -> Iterator[tuple[str, int]]:
    """``jobtrace serve`` for ``store_url`` on a free port; yields (URL, pid) once healthy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "jobtrace", "serve", "--store", store_url, "--create"]
    command += ["--port", str(port), "--log-level", "warning"]
    env = clean_env(JOBTRACE_DIR=str(directory))
    process = subprocess.Popen(command, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"jobtrace serve exited with status {process.returncode}")
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobtrace serve did not answer at {url}")
            time.sleep(0.05)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


KINDS: dict[str, Callable[[int], list[model.Record]]] = {
    "metric": metric_batch,
    "span": span_batch,
    "item": item_batch,
}


#: CPU seconds per record of each http case, server and client: (server, client) per round.
CPU: dict[str, list[tuple[float, float]]] = {}


def http_rate(
    sink: HTTPSink, make: Callable[[int], list[model.Record]], count: int, server: psutil.Process
) -> float:
    """Records/s through the sink; also notes the CPU time both processes spent per record,
    which other processes on a shared machine do not inflate as they do the wall time."""
    batches = [make(BATCH) for _ in range(count)]
    server_cpu, client_cpu = sum(server.cpu_times()[:2]), time.process_time()
    start = time.perf_counter()
    for batch in batches:
        sink.write(batch, batch_id=_ids.time_ordered_id())
    elapsed = time.perf_counter() - start
    n = count * BATCH
    spent = (sum(server.cpu_times()[:2]) - server_cpu) / n, (time.process_time() - client_cpu) / n
    CPU.setdefault(make.__name__, []).append(spent)
    return n / elapsed


def direct_rate(store: Store, make: Callable[[int], list[model.Record]], count: int) -> float:
    batches = [make(BATCH) for _ in range(count)]
    start = time.perf_counter()
    for batch in batches:
        store.write(batch, _ids.time_ordered_id())
    return count * BATCH / (time.perf_counter() - start)


def single_rate(sink: HTTPSink) -> float:
    points = metric_batch(SINGLES)
    start = time.perf_counter()
    for point in points:
        sink.write([point], batch_id=_ids.time_ordered_id())
    return SINGLES / (time.perf_counter() - start)


def append_rate(client: Client) -> float:
    job_id = client.jobs.create()["id"]
    start = time.perf_counter()
    for step in range(SINGLES):
        client.jobs.append_metric_by_id(job_id, "loss", step * 0.5, metric_step=step)
    return SINGLES / (time.perf_counter() - start)


def history_ms(client: Client, job_id: str) -> float:
    start = time.perf_counter()
    points = sum(1 for _ in client.jobs.iter_metric_snapshots(job_id, "loss", page_length=1000))
    elapsed = time.perf_counter() - start
    assert points == HISTORY, points
    return elapsed * 1000


def measure(store_url: str, directory: Path, rounds: int, per_round: int) -> dict[str, list[float]]:
    Store(store_url).close()  # created and migrated before anything is timed
    CPU.clear()
    with served(store_url, directory) as (url, pid):
        server = psutil.Process(pid)
        sink = HTTPSink(url)
        store = Store(store_url)
        client = Client(url)
        try:
            sink.write(metric_batch(100), batch_id="warm-up")
            history = client.jobs.create(job_id="history")["id"]
            steps = range(HISTORY)
            sink.write([(model.METRIC, history, "loss", s, 1 / (s + 1), 1e9 + s) for s in steps])
            cases: dict[str, Callable[[], float]] = {}
            for kind, make in KINDS.items():
                cases[f"http {kind}"] = lambda make=make: http_rate(sink, make, per_round, server)  # type: ignore[misc]
                cases[f"direct {kind}"] = lambda make=make: direct_rate(store, make, per_round)  # type: ignore[misc]
            cases |= {
                "peer": lambda: single_rate(sink),
                "append": lambda: append_rate(client),
                "history": lambda: history_ms(client, history),
            }
            return interleave(cases, rounds)
        finally:
            client.close()
            sink.close()
            store.close()


def report(backend: str, results: dict[str, list[float]], verdicts: Verdicts) -> None:
    peer = median(results["peer"])
    rows = []
    for kind in KINDS:
        http, direct = median(results[f"http {kind}"]), median(results[f"direct {kind}"])
        word = "-"
        if kind in BUDGETED:
            word = verdicts.check(
                f"{backend}: HTTP batch ingest, {kind}s",
                http >= BUDGET,
                f"{http:,.0f} {kind}s/s (budget {BUDGET:,.0f}); {http / direct:.2f}x the "
                f"store's own write rate; {http / peer:.0f}x one-per-request",
            )
        rows.append(
            [
                f"http {kind} (20k/request)",
                f"{http:,.0f}",
                spread([r / 1000 for r in results[f"http {kind}"]]) + "k",
                f"{direct:,.0f}",
                f"{http / direct:.2f}",
                f"{http / peer:.0f}",
                word,
            ]
        )
    rows.append(["peer: 1 point/request", f"{peer:,.0f}", spread(results["peer"]), "", "", "", ""])
    append = results["append"]
    rows.append(
        ["append_metric_by_id (1/request)", f"{median(append):,.0f}", spread(append)] + [""] * 4
    )
    print(f"-- {backend} --")
    headers = ["case", "records/s", "rounds min..max", "Store.write/s", "vs store", "vs peer"]
    print(format_table([*headers, "budget"], rows))
    history = median(results["history"])
    print(
        f"10k-step history over HTTP (10 pages of 1,000): {history:.1f} ms "
        f"({spread(results['history'])}); MLflow get_metric_history (quoted): 493 ms, "
        f"{493 / history:.0f}x"
    )
    http = median(results["http metric"])
    print(
        "vs store: http / direct Store.write of the same kind (the share of the store's own "
        "rate the HTTP hop keeps); vs peer: http / one point per request"
    )
    print(f"metric points vs MLflow log_batch (~7,500 points/s, quoted): {http / 7500:.1f}x")
    for kind, make in KINDS.items():
        spent = CPU.get(make.__name__, [])
        if spent:
            server_us = median([s for s, _ in spent]) * 1e6
            client_us = median([c for _, c in spent]) * 1e6
            print(
                f"CPU per {kind}: server {server_us:.1f} us + client {client_us:.1f} us = "
                f"{1e6 / (server_us + client_us):,.0f} {kind}s/s on CPU time alone (not a "
                "verdict: the rate on an otherwise idle machine; a database server's own "
                "CPU is not counted)"
            )
    print()
    sys.stdout.flush()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds = 3 if args.quick else 7
    per_round = 1 if args.quick else 2
    pg_base = os.environ.get("JOBTRACE_TEST_POSTGRES_URL", PG_DEFAULT_URL)
    pg_problem = postgres_problem(pg_base)
    banner(
        "bench_server: HTTP batch ingest into jobtrace serve vs the store and one point per "
        "request",
        args.quick,
        [
            f"{rounds} rounds x {per_round} batch(es) of {BATCH:,} records per kind; "
            f"the peer posts {SINGLES} points one per request per round",
            "client and server share this machine's cores; point generation is not timed",
        ],
    )
    verdicts = Verdicts("bench_server")
    with tempfile.TemporaryDirectory(prefix="jt-bench-server-") as tmp:
        directory = Path(tmp)
        url = f"sqlite:///{directory / 'server.db'}"
        report("SQLite", measure(url, directory, rounds, per_round), verdicts)
        if pg_problem is not None:
            print(f"-- PostgreSQL: skipped, no server at {pg_base} ({pg_problem}) --")
        else:
            with postgres_schema(pg_base) as (pg_url, _):
                report("PostgreSQL", measure(pg_url, directory, rounds, per_round), verdicts)
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
