"""Scale-out: records/s end to end through RabbitMQ into SQLite and into PostgreSQL.

Budget: >= 100,000 records/s end to end (issue 16), on SQLite and on PostgreSQL.

Cases, each over fresh metric points (a new job per run) in batches of ``--batch`` records:

- peer, ``pika publish``: pika alone publishing the same bodies (the sink's encoded
  batches, built outside the timed region) as persistent messages with publisher
  confirms to a durable queue: the broker's floor for this batch size on this machine;
- ``sink publish``: ``AMQPSink.write`` of the batches (encoding included), nothing
  consuming;
- ``end to end``: the sink publishing while one ``jobtrace consume`` process (started
  before the clock, as in production) drains the queue into the store; timed from the
  first publish until the store holds every batch. The ratio to the peer is end to end ÷
  bare publish: what the whole path keeps of the broker's own rate.

RabbitMQ comes from ``JOBTRACE_TEST_RABBITMQ_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/``), PostgreSQL from ``JOBTRACE_TEST_POSTGRES_URL``
(a fresh schema, dropped at the end; skipped with a note when unreachable). Queues are the
run's own and deleted at the end. Another scale-out case (several servers on one
PostgreSQL) may be added beside these.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import Verdicts, banner, clean_env, format_table, load_note, median, parse_args, spread
from jobtrace.sinks.amqp import AMQPSink
from jobtrace.sinks.http import encode_batch

BUDGET = 100_000.0
RABBITMQ_URL = os.environ.get("JOBTRACE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "JOBTRACE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SOURCE = str(Path(__file__).resolve().parents[1] / "src")


def batches(job_id: str, records: int, size: int) -> list[tuple[str, list[Any]]]:
    """(batch id, records): a job snapshot first, then metric points with steps of their own."""
    from jobtrace import model

    job = model.from_dict(
        {"kind": "job", "id": job_id, "seq": 1, "name": "scaleout", "status": "running",
         "start_time": time.time()}
    )  # fmt: skip
    now = time.time()
    out = []
    for number, start in enumerate(range(0, records, size)):
        points: list[Any] = [
            ("metric", job_id, "loss", step, 0.5, now)
            for step in range(start, min(start + size, records))
        ]
        out.append((f"{job_id}-{number}", ([job] if number == 0 else []) + points))
    return out


def queue_url(queue: str) -> str:
    return f"{RABBITMQ_URL}?queue={queue}"


def delete_queues(*queues: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue=queue)
    finally:
        connection.close()


def bare_publish(records: int, size: int) -> float:
    """pika alone: the same bodies, persistent, confirmed, to a durable queue; records/s."""
    import pika

    queue = f"jobtrace.bench.{uuid.uuid4().hex[:8]}"
    bodies = [encode_batch(bid, recs) for bid, recs in batches(uuid.uuid4().hex, records, size)]
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        channel.confirm_delivery()
        properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        start = time.perf_counter()
        for body in bodies:
            channel.basic_publish(exchange="", routing_key=queue, body=body, properties=properties)
        elapsed = time.perf_counter() - start
        channel.queue_delete(queue=queue)
    finally:
        connection.close()
    return records / elapsed


def sink_publish(records: int, size: int) -> float:
    """AMQPSink.write of the batches (encoding included), nothing consuming; records/s."""
    queue = f"jobtrace.bench.{uuid.uuid4().hex[:8]}"
    work = batches(uuid.uuid4().hex, records, size)
    sink = AMQPSink(queue_url(queue))
    try:
        start = time.perf_counter()
        for batch_id, recs in work:
            sink.write(recs, batch_id)
        elapsed = time.perf_counter() - start
    finally:
        sink.close()
        delete_queues(queue)
    return records / elapsed


def stored_batches(store: Any) -> Callable[[], int]:
    import sqlalchemy as sa

    from jobtrace.store import schema

    table = schema.ingested_batches
    query = sa.select(sa.func.count()).select_from(table)

    def count() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    return count


def wait_for(condition: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the consumer did not store the batches in {timeout:.0f} s")
        time.sleep(0.02)


@contextmanager
def consumer(queue: str, store_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``jobtrace consume`` process draining ``queue`` into ``store_url`` (ready when
    yielded: its queue is declared), stopped by SIGTERM at the end."""
    env = clean_env(
        PYTHONPATH=os.pathsep.join(filter(None, [SOURCE, os.environ.get("PYTHONPATH")]))
    )
    command = [sys.executable, "-m", "jobtrace", "consume", queue_url(queue),
               "--store", store_url, "--no-metrics"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def end_to_end(store_url: str, records: int, size: int) -> float:
    """The sink publishing while a consumer process stores; records/s until all stored."""
    from jobtrace.store import Store

    queue = f"jobtrace.bench.{uuid.uuid4().hex[:8]}"
    work = batches(uuid.uuid4().hex, records, size)
    with Store(store_url) as store:
        count = stored_batches(store)
        before = count()
        with consumer(queue, store_url):
            sink = AMQPSink(queue_url(queue))
            # The consumer's start-up (imports, connection, the store) is not timed: a
            # warm-up batch goes through first.
            warm_up = batches(uuid.uuid4().hex, 10, 10)[0]
            sink.write(warm_up[1], warm_up[0])
            wait_for(lambda: count() - before >= 1)
            before += 1
            start = time.perf_counter()
            for batch_id, recs in work:
                sink.write(recs, batch_id)
            sink.close()
            wait_for(lambda: count() - before >= len(work))
            elapsed = time.perf_counter() - start
    delete_queues(queue, f"{queue}.dead")
    return records / elapsed


@contextmanager
def postgres_store() -> Iterator[str | None]:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except Exception as exc:
        print(f"note: PostgreSQL skipped ({str(exc).strip().splitlines()[0]})")
        yield None
        return
    schema_name = f"jt_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema_name}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema_name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema_name} CASCADE")


def main() -> int:
    args = parse_args(
        __doc__.splitlines()[0],
        extra=lambda p: (
            p.add_argument("--records", type=int, help="records per case and round"),
            p.add_argument("--batch", type=int, default=10_000, help="records per message"),
        ),
    )
    records = args.records or (100_000 if args.quick else 400_000)
    rounds = 1 if args.quick else 3
    banner(
        "scale-out: RabbitMQ -> jobtrace consume -> store",
        args.quick,
        [load_note(), f"{records:,} metric points per case and round, {args.batch:,} a message"],
    )
    verdicts = Verdicts("scaleout")
    with tempfile.TemporaryDirectory() as tmp, postgres_store() as pg_url:
        sqlite_url = f"sqlite:///{Path(tmp) / 'store.db'}"
        from jobtrace.store import Store

        Store(sqlite_url).close()  # created and migrated outside the clock
        if pg_url is not None:
            Store(pg_url).close()
        cases: dict[str, Callable[[], float]] = {
            "pika publish (peer)": lambda: bare_publish(records, args.batch),
            "sink publish": lambda: sink_publish(records, args.batch),
            "end to end, SQLite": lambda: end_to_end(sqlite_url, records, args.batch),
        }
        if pg_url is not None:
            cases["end to end, PostgreSQL"] = lambda: end_to_end(pg_url, records, args.batch)
        results: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for index in range(rounds):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                results[name].append(cases[name]())
            print(f"round {index + 1}/{rounds} done")
    peer = median(results["pika publish (peer)"])
    rows = []
    for name, values in results.items():
        rate = median(values)
        verdict = ""
        if name.startswith("end to end"):
            verdict = verdicts.check(
                name, rate >= BUDGET, f"{rate:,.0f} records/s (>= {BUDGET:,.0f})"
            )
        rows.append(
            [
                name,
                f"{rate:,.0f}",
                spread([v / 1000 for v in values]) + "k",
                f"{rate / peer:.2f}",
                verdict,
            ]
        )
    print()
    print(format_table(["case", "records/s", "rounds", "x peer", "budget"], rows))
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
