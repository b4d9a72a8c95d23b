"""Faults on the HTTP path, each counting records sent against records stored: a record the
server's store refuses, a server that accepts connections and never answers (a tarpit), and
a server SIGKILLed mid-job and restarted on the same port and store.

A store refusal comes from a trigger that refuses spans of one name, on SQLite and
PostgreSQL alike, so both stores are tried through the same path: the store's own error, not
a check in the server. (The issue's own case, a NUL character in a span's info that
PostgreSQL refuses, no longer reaches the store: jobtrace.limits replaces NUL on every path,
and the job below checks that such a span is stored.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from jobtrace import _config, model
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.recorder import get_recorder
from jobtrace.sinks import refused_records
from jobtrace.sinks.http import REQUEST_RECORDS, HTTPSink
from jobtrace.spool import Spool, spools
from jobtrace.store import Store
from tests.cli_helpers import cli_env
from tests.server_helpers import ServeProcess, thread_server

API = "/api/v1"
LENIENT = {"Prefer": "handling=lenient"}
#: A span name the test trigger makes the store refuse (no check in the server refuses it).
REFUSED_NAME = "refuse-me"


def metric(job_id: str, step: int) -> model.Record:
    return (model.METRIC, job_id, "loss", step, step * 0.5, 1_700_000_000.0 + step)


def span(name: str, info: dict[str, Any] | None = None, n: int = 1) -> model.Record:
    return (model.SPAN, f"{n:032x}", f"{n:016x}", None, name, 10**18, 5, info, None, None,
            "j", "h", 1, "t", "svc")  # fmt: skip


def refuse_in_store(store_url: str) -> None:
    """Make the store refuse spans named REFUSED_NAME (and, on SQLite, spans whose info
    still holds a NUL character, as PostgreSQL would)."""
    with Store(store_url) as store, store.engine.begin() as conn:
        if store.is_sqlite:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER jt_refuse BEFORE INSERT ON spans "
                    f"WHEN NEW.name = '{REFUSED_NAME}' OR instr(NEW.info, '\\u0000') > 0 "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
                )
            )
            return
        conn.execute(
            sa.text(
                "CREATE FUNCTION jt_refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.name = '{REFUSED_NAME}' THEN RAISE EXCEPTION "
                "'refused by the test trigger' USING ERRCODE = '22023'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER jt_refuse BEFORE INSERT ON spans "
                "FOR EACH ROW EXECUTE FUNCTION jt_refuse()"
            )
        )


def rows(store_url: str, sql: str) -> list[tuple[Any, ...]]:
    with Store(store_url) as store, store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def count(store_url: str, table: str) -> int:
    return int(rows(store_url, f"SELECT count(*) FROM {table}")[0][0])


def post(server: str, batch_id: str, records: list[Any], **headers: str) -> httpx.Response:
    body = {"id": batch_id, "records": [model.to_dict(r) for r in records]}
    return httpx.post(f"{server}{API}/batches", json=body, headers=headers, timeout=60)


@pytest.fixture
def refusing_server(store_url: str) -> Iterator[str]:
    refuse_in_store(store_url)
    with thread_server(store_url) as url:
        yield url


# -- a record the store refuses ----------------------------------------------------------------


def test_a_lenient_batch_is_stored_without_the_records_refused_and_names_them(
    refusing_server: str, store_url: str
) -> None:
    bad_step = (model.METRIC, "j", "loss", -1, 1.0, 1_700_000_000.0)  # refused by a check
    batch = [metric("j", 0), span(REFUSED_NAME), metric("j", 1), bad_step, span("fine", n=2)]
    response = post(refusing_server, "b1", batch, **LENIENT)
    assert response.status_code == 201, response.text
    assert response.headers["Preference-Applied"] == "handling=lenient"
    body = response.json()
    assert (body["id"], body["records"], body["duplicate"]) == ("b1", 5, False)
    assert [(r["index"], r["kind"], r["field"]) for r in body["rejected"]] == [
        (1, "span", None),
        (3, "metric", "step"),
    ]
    assert "refused by the store" in body["rejected"][0]["message"]
    assert rows(store_url, "SELECT step FROM metrics ORDER BY step") == [(0,), (1,)]
    assert rows(store_url, "SELECT name FROM spans") == [("fine",)]
    assert rows(store_url, "SELECT id, records FROM ingested_batches") == [("b1", 3)]
    again = post(refusing_server, "b1", batch, **LENIENT)  # a retry: acknowledged, not stored
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert rows(store_url, "SELECT id, records FROM ingested_batches") == [("b1", 3)]


def test_a_strict_batch_names_the_record_the_store_refuses_and_stores_nothing(
    refusing_server: str, store_url: str
) -> None:
    response = post(refusing_server, "b1", [metric("j", 0), metric("j", 1), span(REFUSED_NAME)])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_record"
    assert body["detail"] == {"index": 2, "kind": "span", "field": None}
    assert "record 2 (span) was refused by the store" in body["message"]
    assert count(store_url, "metrics") == 0 and count(store_url, "ingested_batches") == 0


def test_the_sink_drops_only_the_records_the_store_refuses_and_counts_them(
    refusing_server: str, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Three parts of REQUEST_RECORDS; refused spans in the first and the last.
    total = 3 * REQUEST_RECORDS
    batch = [metric("j", step) for step in range(total)]
    batch[7] = span(REFUSED_NAME, n=1)
    batch[total - 1] = span(REFUSED_NAME, n=2)
    batch[total - 2] = span("fine", n=3)
    before = refused_records().get(model.SPAN, 0)
    sink = HTTPSink(refusing_server)
    try:
        with caplog.at_level(logging.WARNING, "jobtrace"):
            sink.write(batch, batch_id="x")
            sink.write(batch, batch_id="x")  # a replay: every part is a duplicate
    finally:
        sink.close()
    sent_metrics = total - 3
    assert count(store_url, "metrics") == sent_metrics
    assert rows(store_url, "SELECT name FROM spans") == [("fine",)]
    parts = rows(store_url, "SELECT id, records FROM ingested_batches ORDER BY id")
    assert parts == [("x/0", REQUEST_RECORDS - 1), ("x/1", REQUEST_RECORDS), ("x/2", 4999)]
    assert sink.rejected == 2 and refused_records()[model.SPAN] == before + 2
    # Logged once for the kind of refusal, not once per record.
    assert caplog.text.count("dropped a span record the server refused") == 1


JOB_WITH_A_BAD_SPAN = """
import sys
import jobtrace
from jobtrace.sinks import refused_records

points = int(sys.argv[1])
for step in range(points // 10):
    jobtrace.log_metric("loss", 1.0 / (step + 1), step=step)
with jobtrace.Trace("refuse-me"):
    pass
with jobtrace.Trace("nul", info={"text": "a\\x00b"}):
    pass
jobtrace.flush()  # the refused span goes in a batch of its own, ahead of most points
for step in range(points // 10, points):
    jobtrace.log_metric("loss", 1.0 / (step + 1), step=step)
with jobtrace.Trace("good", info={"text": "ab"}):
    pass
jobtrace.flush()
print(refused_records())
"""


@pytest.fixture
def serve(store_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(store_url, tmp_path / "server")
    yield server
    server.stop()


def test_a_span_the_store_refuses_is_dropped_alone_and_the_job_still_finishes(
    serve: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    points = 20_000
    refuse_in_store(store_url)  # SQLite: as PostgreSQL refuses a NUL in a JSON document
    serve.start()
    script = tmp_path / "job.py"
    script.write_text(JOB_WITH_A_BAD_SPAN)
    job = subprocess.run(
        [sys.executable, "-m", "jobtrace", "run", "--job-id", "nul", str(script), str(points)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace", JOBTRACE_URL=serve.url),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert job.returncode == 0, job.stderr
    assert "{'span': 1}" in job.stdout
    assert job.stderr.count("dropped a span record the server refused") == 1
    assert "spooling" not in job.stderr
    assert count(store_url, "metrics") == points
    assert sorted(rows(store_url, "SELECT name FROM spans")) == [("good",), ("nul",)]
    [(info,)] = rows(store_url, "SELECT info FROM spans WHERE name = 'nul'")
    assert "a\ufffdb" in str(info)  # the NUL replaced, as on every path
    [(status, dropped)] = rows(
        store_url, "SELECT status, records_dropped FROM jobs WHERE id = 'nul'"
    )
    # The refused span is a lost record like one past the spool's cap: counted on its job.
    assert status == "succeeded"
    assert (json.loads(dropped) if isinstance(dropped, str) else dropped) == {"span": 1}
    assert "LOST 1 record" in job.stderr
    assert spooled_records(tmp_path / ".jobtrace" / "spool") == []


# -- a tarpit: accepts connections, never answers ----------------------------------------------


class Tarpit:
    """A socket on loopback that accepts connections and never reads or answers."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="tarpit", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections.append(conn)

    def close(self) -> None:
        # shutdown() wakes the accept() blocked in the thread; close() alone may not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=10)
        for conn in self.connections:
            conn.close()


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    yield pit
    pit.close()


def test_a_write_to_a_tarpit_gives_up_at_its_timeout_without_piling_up_requests(
    tarpit: Tarpit,
) -> None:
    sink = HTTPSink(tarpit.url, timeout=0.5)
    try:
        with pytest.raises(StoreError, match=r"did not take the batch within 0\.5 s"):
            sink.write([metric("j", step) for step in range(100)], batch_id="b")
        # A big body the tarpit never reads: the send blocks, and is bounded the same way.
        with pytest.raises(StoreError, match=r"did not take the batch within 0\.5 s"):
            sink.write([metric("j", step) for step in range(REQUEST_RECORDS)], batch_id="c")
    finally:
        sink.close()
    # One request each: a request that timed out may still be in the server's hands, so it
    # is not sent again on top of it (the recorder replays it later from the spool).
    assert len(tarpit.connections) == 2


def spooled_records(directory: Path) -> list[model.Record]:
    """Every record waiting in the spools under ``directory`` (whatever their format)."""
    return [
        record
        for queue in spools(directory)
        for file in queue.files()
        if file.state != "quarantined"
        for record in Spool.read(file.path)
    ]


def test_a_flush_facing_a_tarpit_returns_with_everything_spooled_then_replayed_once(
    tarpit: Tarpit, store_url: str, isolated_jobtrace: Path
) -> None:
    sent = 45_000  # three recorder batches
    _config.configure(url=tarpit.url, install_signal_handlers=False, http_timeout=0.5)
    recorder = get_recorder()
    written, spooled, replayed = recorder.written, recorder.spooled, recorder.replayed
    for step in range(sent):
        recorder.record(metric("j", step))
    assert recorder.flush()
    assert recorder.spooled - spooled == sent and recorder.written == written
    assert len(spooled_records(isolated_jobtrace / "spool")) == sent
    port = tarpit.port
    tarpit.close()
    # The same URL with the default timeout: a fresh server's first writes can be slow.
    _config.configure(url=tarpit.url, install_signal_handlers=False)
    with thread_server(store_url, port=port):  # a real server where the tarpit was
        assert recorder.flush()
        assert recorder.replayed - replayed == sent
    assert count(store_url, "metrics") == sent
    assert sum(r[0] for r in rows(store_url, "SELECT records FROM ingested_batches")) == sent
    assert spooled_records(isolated_jobtrace / "spool") == []


TIGHT_LOOP_JOB = """
import sys
import jobtrace

for step in range(int(sys.argv[1])):
    jobtrace.log_metric("loss", 0.5, step=step)
"""


def test_a_job_facing_a_tarpit_exits_with_its_records_spooled_and_they_replay_later(
    tarpit: Tarpit, store_url: str, tmp_path: Path
) -> None:
    points = 100_000
    directory = tmp_path / ".jobtrace"
    script = tmp_path / "job.py"
    script.write_text(TIGHT_LOOP_JOB)
    job = subprocess.run(
        [sys.executable, "-m", "jobtrace", "run", "--job-id", "pit", str(script), str(points)],
        cwd=tmp_path,
        env=cli_env(directory, JOBTRACE_URL=tarpit.url, JOBTRACE_HTTP_TIMEOUT="1"),
        capture_output=True,
        text=True,
        timeout=110,  # a hang fails here, not at the suite's timeout
        check=False,
    )
    assert job.returncode == 0, job.stderr
    spooled = spooled_records(directory / "spool")
    assert sum(1 for r in spooled if r[0] == model.METRIC) == points
    port = tarpit.port
    tarpit.close()
    with thread_server(store_url, port=port):
        _config.configure(url=tarpit.url, directory=directory, install_signal_handlers=False)
        assert get_recorder().flush()  # a later process on the same URL replays the spool
    assert count(store_url, "metrics") == points
    assert rows(store_url, "SELECT status FROM jobs WHERE id = 'pit'") == [("succeeded",)]
    assert spooled_records(directory / "spool") == []


# -- a server SIGKILLed mid-job ---------------------------------------------------------------

STEADY_JOB = """
import sys, time
from pathlib import Path
import jobtrace
from jobtrace.recorder import get_recorder

points, marks = int(sys.argv[1]), Path(sys.argv[2])
recorder = get_recorder()
snapshots = 0
record_control = recorder.record_control

def counted(record):  # job snapshots: counted so the test knows every record sent
    global snapshots
    snapshots += 1
    record_control(record)

recorder.record_control = counted
profiles = 0
record = recorder.record

def counted_profiles(record_):  # the job's profile records: counted too
    global profiles
    if record_[0] == "profile":
        profiles += 1
    record(record_)

recorder.record = counted_profiles
def wait_for(name):
    deadline = time.monotonic() + 100
    while not (marks / name).exists():
        assert time.monotonic() < deadline, name
        time.sleep(0.01)

with jobtrace.job("steady", job_id="steady"):
    for step in range(points):
        jobtrace.log_metric("loss", 0.5, step=step)
        if step % 500 == 0:
            (marks / str(step)).touch()
            time.sleep(0.02)  # a job that works between its metrics
        if step == points * 2 // 3:
            wait_for("server-restarted")  # so the restart surely happens mid-job
jobtrace.flush()
print(points + snapshots + profiles)
"""


def test_a_server_killed_mid_job_and_restarted_loses_and_duplicates_nothing(
    serve: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    points = 30_000
    serve.start()
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "job.py"
    script.write_text(STEADY_JOB)
    job = subprocess.Popen(
        [sys.executable, str(script), str(points), str(marks)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace", JOBTRACE_URL=serve.url, JOBTRACE_FLUSH_INTERVAL="0.1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marks / "5000", job)
        serve.kill()  # SIGKILL, whatever it was doing
        wait_for(marks / "10000", job)
        serve.start()  # same port, same store
        (marks / "server-restarted").touch()
        stdout, stderr = job.communicate(timeout=100)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "spooling records" in stderr and "reachable again" in stderr
    sent = int(stdout.split()[-1])
    assert rows(store_url, "SELECT count(*), min(step), max(step) FROM metrics") == [
        (points, 0, points - 1)
    ]
    assert rows(store_url, "SELECT status FROM jobs WHERE id = 'steady'") == [("succeeded",)]
    # Every record the job sent was stored under exactly one batch id: a batch stored twice
    # under two ids would make this sum larger, a lost one smaller.
    assert sum(r[0] for r in rows(store_url, "SELECT records FROM ingested_batches")) == sent
    assert spooled_records(tmp_path / ".jobtrace" / "spool") == []


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 100
    while not path.exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the job exited early ({process.returncode}): {stderr}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def test_the_openapi_description_documents_lenient_handling(refusing_server: str) -> None:
    spec = orjson.loads(httpx.get(f"{refusing_server}/openapi.json").content)
    operation = spec["paths"][f"{API}/batches"]["post"]
    assert "Prefer: handling=lenient" in operation["description"]
    schema = operation["responses"]["201"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]["rejected"]["items"]["required"]) == {
        "index",
        "kind",
        "field",
        "message",
    }


def test_a_server_slower_than_the_timeout_still_stores_each_batch_once(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first request is held in the server until the sink has given up on it; then it
    # commits. Sending the batch again (as a replay from the spool does) neither loses it
    # nor stores it twice, whichever of the two requests reaches the store first.
    release = threading.Event()
    calls: list[int] = []
    real = Store.write_partial

    def slow_once(self: Store, records: Any, batch_id: str | None = None) -> Any:
        calls.append(len(records))
        if len(calls) == 1:
            release.wait(timeout=60)
        return real(self, records, batch_id)

    monkeypatch.setattr(Store, "write_partial", slow_once)
    batch = [metric("j", step) for step in range(1000)]
    with thread_server(store_url) as url:
        sink = HTTPSink(url, timeout=0.5)
        try:
            with pytest.raises(StoreError, match="did not take the batch"):
                sink.write(batch, batch_id="slow")
            release.set()
            sink.timeout = 30.0
            sink.write(batch, batch_id="slow")
        finally:
            sink.close()
            release.set()
    assert len(calls) == 2
    assert count(store_url, "metrics") == 1000
    assert rows(store_url, "SELECT id, records FROM ingested_batches") == [("slow", 1000)]


def test_a_bad_http_timeout_is_refused_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBTRACE_HTTP_TIMEOUT", "soon")
    with pytest.raises(ConfigurationError, match="JOBTRACE_HTTP_TIMEOUT"):
        _config.resolve()
    monkeypatch.setenv("JOBTRACE_HTTP_TIMEOUT", "2.5")
    assert _config.resolve().http_timeout == 2.5


def test_a_server_that_answers_strictly_gets_the_same_result_one_record_at_a_time(
    refusing_server: str, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobtrace.server.routes import batches

    monkeypatch.setattr(batches, "_lenient", lambda request: False)  # an older server
    batch = [metric("j", 0), span(REFUSED_NAME), metric("j", 1), metric("j", -1)]
    sink = HTTPSink(refusing_server)
    try:
        sink.write(batch, batch_id="b")
    finally:
        sink.close()
    assert sink.rejected == 2
    assert rows(store_url, "SELECT step FROM metrics ORDER BY step") == [(0,), (1,)]
    assert rows(store_url, "SELECT id, records FROM ingested_batches") == [("b", 2)]
