"""Many `jobtrace serve` processes over one PostgreSQL database, hammered by many clients.

Two real servers (one of them with ``--workers 2``) share a store on the shared PostgreSQL
server (a schema of the test's own). Client threads send batches to either, many jobs and
metric keys shared between clients, some batches to both servers at once; the test then
counts what the database holds against what was sent (every row exactly once, every
latest value the largest step sent), expects every request to have succeeded (no 5xx: a
deadlock or serialization failure between servers must be retried by the store, never
answered), and asks both servers the same questions to get the same answers.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from jobtrace import model
from jobtrace.errors import ConfigurationError
from jobtrace.sinks.http import BATCHES_PATH, HTTPSink, encode_batch
from jobtrace.store import Store
from tests.cli_helpers import cli_env
from tests.server_helpers import ServeProcess
from tests.test_http_faults import STEADY_JOB, spooled_records, wait_for

# Real servers, jobs and PostgreSQL on a shared 2-core machine: minutes when it is busy.
pytestmark = [pytest.mark.postgresql, pytest.mark.timeout(600)]

CLIENTS = 8
BATCHES = 24  # per client
JOBS = 3  # job ids every client writes to
LOSS_POINTS = 40  # per batch, unique steps
SHARED_POINTS = 10  # per batch, keys other clients write too
SPANS = 20
ITEMS = 10
NOW = 1_700_000_000.0


def job_record(job_id: str, seq: int) -> model.Record:
    job = {
        "id": job_id,
        "seq": seq,
        "name": job_id,
        "experiment": "fleet",
        "status": "running",
        "start_time": NOW,
        "last_heartbeat": NOW + seq,
    }
    return (model.JOB, *(job.get(f) for f in model.FIELDS[model.JOB]))


def client_batch(client: int, index: int) -> list[model.Record]:
    """One client's batch: snapshots of two shared jobs (in an order that differs between
    clients, so servers writing at once lock the same rows in opposite batch orders),
    metric points of both (some on keys other clients write as well, with the same value),
    and spans and items of its own."""
    first = (client + index) % JOBS
    pair = [f"job-{first}", f"job-{(first + 1) % JOBS}"]
    if client % 2:
        pair.reverse()
    job_id = pair[0]
    records: list[model.Record] = [job_record(j, index * CLIENTS + client + 1) for j in pair]
    base = client * 1_000_000 + index * LOSS_POINTS
    records += [
        (model.METRIC, j, "loss", step, step * 0.5, NOW + step)
        for step in range(base, base + LOSS_POINTS)
        for j in pair
    ]
    records += [
        (model.METRIC, j, "shared", step, float(step), NOW + step)
        for step in range(index * SHARED_POINTS, (index + 1) * SHARED_POINTS)
        for j in pair
    ]
    trace_id = f"{client:016x}{index:016x}"
    records += [
        (model.SPAN, trace_id, f"{k + 1:016x}", None, "work", 10**18 + k, 5, {"k": k},
         None, None, job_id, "h", client, "t")
        for k in range(SPANS)
    ]  # fmt: skip
    records += [
        (model.ITEM, f"c{client}-b{index}-{k}", job_id, f"f{k}", NOW, 0.1, 1, None, None,
         "success", None, None, None, None)
        for k in range(ITEMS)
    ]  # fmt: skip
    return records


@pytest.fixture
def fleet(postgres_url: str, tmp_path: Path) -> Iterator[list[ServeProcess]]:
    """Two servers on one PostgreSQL store: one process, and one with two uvicorn workers."""
    Store(postgres_url).close()  # migrated once, as `jobtrace db upgrade` would
    servers = [
        ServeProcess(postgres_url, tmp_path / "one"),
        ServeProcess(postgres_url, tmp_path / "two", args=("--workers", "2")),
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def post(client: httpx.Client, body: bytes, server: ServeProcess) -> int:
    response = client.post(
        server.url + BATCHES_PATH,
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code in {200, 201}, (server.url, response.text)
    return response.status_code


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with Store(url) as store, store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_many_clients_through_two_servers_store_every_record_exactly_once(
    fleet: list[ServeProcess], postgres_url: str
) -> None:
    statuses: dict[str, list[int]] = {}

    def run_client(client: int) -> None:
        with httpx.Client() as http, ThreadPoolExecutor(2) as both:
            for index in range(BATCHES):
                batch_id = f"c{client}-b{index}"
                body = encode_batch(batch_id, client_batch(client, index))
                if index % 4 == 0:
                    # The same batch to both servers at once (a client's retry that went
                    # to the other server behind a load balancer): stored once.
                    answers = list(both.map(functools.partial(post, http, body), fleet))
                else:
                    answers = [post(http, body, fleet[(client + index) % 2])]
                statuses[batch_id] = answers

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(run_client, range(CLIENTS)))

    sent = [client_batch(c, i) for c in range(CLIENTS) for i in range(BATCHES)]
    records = list(itertools.chain.from_iterable(sent))
    twice = [answers for answers in statuses.values() if len(answers) == 2]
    assert twice and all(sorted(answers) == [200, 201] for answers in twice)

    metric_keys = {(r[1], r[2], r[3]) for r in records if r[0] == model.METRIC}
    assert rows(postgres_url, "SELECT count(*) FROM ingested_batches") == [(CLIENTS * BATCHES,)]
    assert rows(postgres_url, "SELECT count(*) FROM metrics") == [(len(metric_keys),)]
    spans = sum(r[0] == model.SPAN for r in records)
    items = sum(r[0] == model.ITEM for r in records)
    assert rows(postgres_url, "SELECT count(*) FROM spans") == [(spans,)]
    assert rows(postgres_url, "SELECT count(*) FROM items") == [(items,)]
    # The latest point of every key is the largest step sent, whichever server took it.
    latest: dict[tuple[str, str], int] = {}
    for job_id, name, step in metric_keys:
        latest[job_id, name] = max(step, latest.get((job_id, name), -1))
    stored = rows(postgres_url, "SELECT job_id, name, step FROM metric_latest")
    assert {(j, n): s for j, n, s in stored} == latest
    # Every job holds its newest snapshot.
    newest: dict[str, int] = {}
    for r in records:
        if r[0] == model.JOB:
            newest[r[1]] = max(r[2], newest.get(r[1], 0))
    assert dict(rows(postgres_url, "SELECT id, seq FROM jobs")) == newest

    # The same answers from every instance (and from every worker of the second).
    questions = [
        *(f"/api/v1/jobs/job-{j}/metrics" for j in range(JOBS)),
        *(f"/api/v1/jobs/job-{j}/metrics/shared/snapshots?pageLength=1000" for j in range(JOBS)),
        "/api/v1/experiments/fleet/metrics?pageLength=100",
        f"/api/v1/traces/{3:016x}{5:016x}",
    ]
    for question in questions:
        answers = [httpx.get(s.url + question, timeout=30) for s in fleet for _ in range(2)]
        assert all(a.status_code == 200 for a in answers), question
        assert all(a.json() == answers[0].json() for a in answers), question


# -- faults under load: a job's records counted as sent and as stored ----------------------------


def run_steady_job(
    tmp_path: Path, url: str, points: int, fault: Callable[[], None]
) -> tuple[int, str]:
    """tests/test_http_faults.py's steady job, sending to ``url``; ``fault()`` runs a third
    of the way in, and the job goes on (its mark says so) once it returns. Returns the
    records the job sent and its stderr."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "job.py"
    script.write_text(STEADY_JOB)
    job = subprocess.Popen(
        [sys.executable, str(script), str(points), str(marks)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace", JOBTRACE_URL=url, JOBTRACE_FLUSH_INTERVAL="0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marks / str(points // 3 // 500 * 500), job)
        fault()
        (marks / "server-restarted").touch()
        stdout, stderr = job.communicate(timeout=100)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert spooled_records(tmp_path / ".jobtrace" / "spool") == []
    return int(stdout.split()[-1]), stderr


def assert_stored_once(url: str, points: int, sent: int) -> None:
    assert rows(url, "SELECT count(*), min(step), max(step) FROM metrics") == [
        (points, 0, points - 1)
    ]
    assert rows(url, "SELECT status FROM jobs WHERE id = 'steady'") == [("succeeded",)]
    # Each record under exactly one batch id: a batch stored twice would make the sum
    # larger, a lost one smaller.
    assert rows(url, "SELECT sum(records) FROM ingested_batches") == [(sent,)]


def test_a_job_given_two_servers_fails_over_when_one_is_sigkilled_and_loses_nothing(
    fleet: list[ServeProcess], postgres_url: str, tmp_path: Path
) -> None:
    points = 20_000
    first, second = fleet
    sent, stderr = run_steady_job(tmp_path, f"{first.url},{second.url}", points, first.kill)
    assert first.process is None  # killed, never restarted: the second took over
    assert "spooling" not in stderr  # nothing waited: the next server took each batch
    assert_stored_once(postgres_url, points, sent)


def test_database_connections_terminated_under_load_lose_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    # Only this test's connections are terminated (by their application name): the
    # PostgreSQL server is shared with other tests.
    name = f"jt_fleet_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}&application_name={name}"
    Store(url).close()
    servers = [ServeProcess(url, tmp_path / n) for n in ("one", "two")]
    for server in servers:
        server.start()

    def terminate() -> None:
        killed = rows(
            postgres_url,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{name}'",
        )
        assert killed and all(ok for (ok,) in killed)

    try:
        points = 20_000
        sent, _ = run_steady_job(tmp_path, ",".join(s.url for s in servers), points, terminate)
    finally:
        for server in servers:
            server.stop()
    assert_stored_once(postgres_url, points, sent)


def test_a_bad_server_in_a_list_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"'ftp://b:1'.*comma-separated"):
        HTTPSink("http://a:1,ftp://b:1")
    assert [s.url for s in HTTPSink("http://a:1, https://b:2/x").servers] == [
        "http://a:1",
        "https://b:2/x",
    ]


def test_a_batch_takes_the_rows_it_upserts_in_key_order(postgres_url: str) -> None:
    """The deadlock two servers would meet: a batch holding job-1 while it waits for job-0,
    and another transaction holding job-0 while it waits for job-1. Written in key order,
    the batch waits for job-0 before it touches job-1, so the other transaction takes
    job-1 without waiting at all (its lock timeout, far below PostgreSQL's deadlock
    check, would fail it otherwise)."""
    import psycopg

    name = f"jt_order_{uuid.uuid4().hex[:12]}"
    store = Store(f"{postgres_url}&application_name={name}")
    store.write([job_record("job-0", 1), job_record("job-1", 1)])
    with psycopg.connect(postgres_url) as other, ThreadPoolExecutor(1) as pool:
        other.execute("SET lock_timeout = '500ms'")
        other.execute("UPDATE jobs SET name = 'held' WHERE id = 'job-0'")
        # Batch order job-1, job-0: without key order it would lock job-1 first.
        writing = pool.submit(store.write, [job_record("job-1", 2), job_record("job-0", 2)])
        deadline = time.monotonic() + 60
        waiting = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' "
        waiting += "AND wait_event_type = 'Lock'"
        while rows(postgres_url, waiting) != [(1,)]:
            assert not writing.done(), writing.exception()
            assert time.monotonic() < deadline, "the batch never waited for job-0"
            time.sleep(0.01)
        other.execute("UPDATE jobs SET name = 'held' WHERE id = 'job-1'")  # not held by it
        other.commit()
        assert writing.result(timeout=60) is True
    store.close()
    assert rows(postgres_url, "SELECT id, seq FROM jobs ORDER BY id") == [
        ("job-0", 2),
        ("job-1", 2),
    ]
