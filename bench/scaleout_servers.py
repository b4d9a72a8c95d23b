"""Ingest through 1, 2 and 4 ``jobtrace serve`` processes sharing one PostgreSQL store.

What an operator scaling out the servers gets: records/s stored when many client processes
send batches (the ``http://`` sink's own code, one POST of BATCH records per batch) to N
server processes over the same database. Each client is given every server URL, its own
first (the sink's failover list), so the load spreads evenly. Each configuration writes
into a fresh schema (fresh ids, every write inserts), rounds rotate the order of the
configurations, and the figure is the median over rounds of all records divided by the
time from the first client's first request to the last client's last answer. The ratios
2:1 and 4:1 are printed from the same run: absolute rates on a shared machine move with
everyone else's load, the ratios much less. Every batch stored is counted back
(``ingested_batches``), so a figure never hides a lost batch.

On these 2-core machines the servers, the clients and PostgreSQL share the same two cores,
so more servers cannot add CPU; what the ratios show is that adding servers costs nothing
(no lock contention, no retries) and where the database becomes the limit.

    python bench/scaleout_servers.py [--quick] [--clients N]

PostgreSQL comes from ``JOBTRACE_TEST_POSTGRES_URL`` as in ``bench_persist.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import orjson
import psycopg

from _common import banner, clean_env, format_table, load_note, median, parse_args, rotated
from bench_persist import PG_DEFAULT_URL, postgres_problem, postgres_schema
from bench_server import served

SERVERS = (1, 2, 4)
BATCH = 2_000

#: One client process: sends its batches through HTTPSink (mixed metric points and spans,
#: as a job's flushes carry), prints its first-request and last-answer times.
CLIENT = """
import sys, time, orjson
from bench_persist import metric_batch, span_batch
from jobtrace import _ids
from jobtrace.sinks.http import HTTPSink
urls, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
work = [metric_batch(size // 2) + span_batch(size - size // 2) for _ in range(batches)]
sink = HTTPSink(urls, timeout=120)
start = time.time()
for records in work:
    sink.write(records, batch_id=_ids.time_ordered_id())
print(orjson.dumps({"start": start, "end": time.time(), "records": batches * size}).decode())
"""


def run_clients(urls: list[str], clients: int, batches: int) -> tuple[float, int]:
    """Records/s over all ``clients`` and the records they sent."""
    env = clean_env(PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    processes = []
    for i in range(clients):
        # Each client's own server first: the sink stays with it while it answers.
        order = urls[i % len(urls) :] + urls[: i % len(urls)]
        command = [sys.executable, "-c", CLIENT, ",".join(order), str(batches), str(BATCH)]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=900)
        if process.returncode != 0:
            raise RuntimeError(f"a client failed with status {process.returncode}")
        results.append(orjson.loads(out))
    sent = sum(r["records"] for r in results)
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sent / elapsed, sent


def one_configuration(base_url: str, servers: int, clients: int, batches: int) -> float:
    """Records/s with ``servers`` server processes on a fresh schema, checked stored."""
    with ExitStack() as stack:
        store_url, conninfo = stack.enter_context(postgres_schema(base_url))
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        urls = [
            stack.enter_context(served(store_url, directory / str(i)))[0] for i in range(servers)
        ]
        rate, sent = run_clients(urls, clients, batches)
        with psycopg.connect(conninfo) as conn:
            row = conn.execute("SELECT coalesce(sum(records), 0) FROM ingested_batches").fetchone()
        stored = int(row[0]) if row else 0
        if stored != sent:
            raise RuntimeError(f"{servers} server(s): {sent} records sent, {stored} stored")
        return rate


def main(argv: list[str] | None = None) -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--clients", type=int, default=6, help="client processes")

    args = parse_args(__doc__.splitlines()[0], argv, extra=extra)
    base_url = os.environ.get("JOBTRACE_TEST_POSTGRES_URL", PG_DEFAULT_URL)
    rounds, batches = (1, 5) if args.quick else (3, 20)
    banner(
        "ingest through N servers on one PostgreSQL",
        args.quick,
        [
            load_note(),
            f"{args.clients} client processes x {batches} batches of {BATCH} records "
            "(half metric points, half spans) per configuration and round",
        ],
    )
    problem = postgres_problem(base_url)
    if problem:
        print(f"skipped: PostgreSQL unreachable at {base_url} ({problem})")
        return
    rates: dict[int, list[float]] = {n: [] for n in SERVERS}
    for round_index in range(rounds):
        for name in rotated([str(n) for n in SERVERS], round_index):
            rates[int(name)].append(one_configuration(base_url, int(name), args.clients, batches))
    one = median(rates[1])
    rows = [
        [f"{n} server(s)", f"{median(rates[n]):,.0f}", f"{median(rates[n]) / one:.2f}"]
        for n in SERVERS
    ]
    print(format_table(["configuration", "records/s", "ratio to 1 server"], rows))
    print("every record sent was counted back in the store, once")


if __name__ == "__main__":
    main()
