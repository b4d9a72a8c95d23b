"""PostgreSQL taken away under load: nothing sent is lost, nothing is stored twice.

Each test runs a real job (``jobtrace run`` in a subprocess) that logs metric points, spans
and batch items in a loop (flushing after every chunk, or leaving the writing to the
recorder's thread) into ``postgresql://`` or through ``jobtrace serve``, while a private
PostgreSQL server (:mod:`tests.pg_private`; never the shared one) is killed and brought
back. A kill "under load" happens while a write of the job waits inside its transaction
(:func:`writes_blocked`), so a half-done transaction dies with the server. The job counts
what it sent; the test counts what the database holds, by row and by key, and expects
both to equal what was sent, with the job ``succeeded``, nothing dropped, its spool empty
and no traceback in its output.

The job and the test take turns through marker files, never through sleeps: the job polls
for the test's marks between chunks, and the test waits for the job's marks, for the
database's own state (``pg_isready``, ``pg_stat_activity``) or for the server's health
endpoint, each with a bound.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from jobtrace.sinks.http import BATCHES_PATH, encode_batch
from tests.cli_helpers import cli_env
from tests.pg_private import PrivateDatabase, PrivatePostgres, StopMode, reap_orphans
from tests.server_helpers import ServeProcess, assert_error

#: Loop iterations between two flushes; each logs a metric point, a span and an item.
CHUNK = 1000
#: Chunks the job logs before it tells the test it is under way, and after the database is
#: back before it ends.
CHUNKS_BEFORE = 3
CHUNKS_AFTER = 3
#: Chunks the job logs at most while the test takes its next step, so that a job whose
#: writer thread falls behind does not pile up records without end.
PHASE_CHUNKS = 10
WAIT = 90.0

JOB_SCRIPT = f"""
import sys, time
from pathlib import Path
import orjson
import jobtrace
from jobtrace.recorder import get_recorder

marks = Path(sys.argv[1])
OUTAGES = int(sys.argv[2])
FLUSH_EACH_CHUNK = sys.argv[3] == "flush-each-chunk"
END_WHILE_DOWN = sys.argv[4] == "end-while-down"
job = jobtrace.current_job()
files = jobtrace.BatchMetrics(name="files")
files.start()
sent = 0

def log_chunk():
    global sent
    for step in range(sent, sent + {CHUNK}):
        jobtrace.log_metric("loss", step * 0.5, step=step)
        with jobtrace.Trace("work", info={{"step": step}}):
            pass
        files.record_file(f"file-{{step}}", duration=0.001, samples=step)
    sent += {CHUNK}
    if FLUSH_EACH_CHUNK:
        jobtrace.flush()

# The test touches down-N once the database is gone and up-N once it is back; the job
# keeps logging throughout and says what it has seen.
outage = 0
after_up = 0
state = None
deadline = time.monotonic() + {WAIT}
while after_up < {CHUNKS_AFTER}:
    assert time.monotonic() < deadline, f"the test never ended outage {{outage}}"
    down, up = (marks / f"down-{{outage}}").exists(), (marks / f"up-{{outage}}").exists()
    if (outage, down, up) != state:
        state, logged = (outage, down, up), 0
    if logged == {PHASE_CHUNKS}:
        # Enough for this phase: the job waits (as for its input), the writer works on.
        time.sleep(0.005)
        continue
    logged += 1
    log_chunk()
    if sent >= {CHUNKS_BEFORE * CHUNK}:
        (marks / "running").touch()
    if up:
        jobtrace.flush()  # replays what the outage spooled, then writes what is new
        (marks / f"written-after-up-{{outage}}").touch()
        outage += 1
    elif down:
        jobtrace.flush()  # at least one write while the database is down
        (marks / f"logged-while-down-{{outage}}").touch()
        if END_WHILE_DOWN:
            break
    if outage == OUTAGES:
        after_up += 1
files.finish()
jobtrace.flush()
rec = get_recorder()
counts = {{"sent": sent, "job": job.id, "batch": files.batch_id, "spooled": rec.spooled,
          "replayed": rec.replayed, "dropped": rec.dropped}}
sys.stdout.write(orjson.dumps(counts).decode() + "\\n")
"""


class Job:
    """The job script under ``jobtrace run``, writing to ``url``, through ``outages``
    outages; it flushes after every chunk, or leaves writing to the recorder's thread."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        *,
        outages: int = 1,
        flush_each_chunk: bool = True,
        end_while_down: bool = False,
    ) -> None:
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.directory = tmp_path / ".jobtrace"
        script = tmp_path / "job.py"
        script.write_text(JOB_SCRIPT)
        modes = [
            "flush-each-chunk" if flush_each_chunk else "background",
            "end-while-down" if end_while_down else "end-after-outages",
        ]
        run = [sys.executable, "-m", "jobtrace", "run", "--job-id", "pg-fault", str(script)]
        self.process = subprocess.Popen(
            [*run, str(self.marks), str(outages), *modes],
            cwd=tmp_path,
            # Left to the writer thread, a loop outruns it; the buffer holds the whole job
            # here so that what is measured is the outage, not the buffer's overflow.
            env=cli_env(self.directory, JOBTRACE_URL=url, JOBTRACE_BUFFER_SIZE="10000000"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def mark(self, name: str) -> None:
        (self.marks / name).touch()

    def wait_for(self, name: str) -> None:
        """Wait (bounded) for the job to touch mark ``name``; fail if it exited first."""
        self.wait_until(f"mark {name!r}", (self.marks / name).exists)

    def wait_until(self, what: str, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` (bounded) while the job runs; fail if it exited first."""
        deadline = time.monotonic() + WAIT
        while not condition():
            if self.process.poll() is not None:
                _, stderr = self.process.communicate()
                raise AssertionError(f"the job exited ({self.process.returncode}): {stderr}")
            assert time.monotonic() < deadline, f"the job never reached {what}"
            time.sleep(0.01)

    def outage(
        self, number: int, db: PrivateDatabase, mode: StopMode | None, *, mid_write: bool = False
    ) -> None:
        """Take the database down (unless ``mode`` is None: it is down already), let the
        job log and write while it is, bring it back, and let the job write again.

        ``mid_write`` stops the database while a write of the job (or of the server it
        sends to) waits inside its transaction, so that transaction dies half done.
        """
        if mode is not None:
            with writes_blocked(db, self) if mid_write else contextlib.nullcontext():
                db.server.stop(mode)
        self.mark(f"down-{number}")
        self.wait_for(f"logged-while-down-{number}")
        db.server.start()
        self.mark(f"up-{number}")
        self.wait_for(f"written-after-up-{number}")

    def finish(self, *, recovered: bool = True) -> dict[str, Any]:
        """Wait for the job to end successfully; its counts. It met an outage, and (if
        ``recovered``) saw the database back and replayed all it had spooled."""
        stdout, stderr = self.process.communicate(timeout=WAIT)
        assert self.process.returncode == 0, stderr
        counts: dict[str, Any] = orjson.loads(stdout.splitlines()[-1])
        assert "spooling records" in stderr and counts["spooled"] > 0, stderr
        if recovered:
            assert "reachable again" in stderr, stderr
            assert counts["replayed"] == counts["spooled"]
        # The outage is told in a line or two, not in tracebacks on the job's output.
        assert "Traceback" not in stderr, stderr
        return counts

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()

    def spooled_files(self) -> list[Path]:
        spool = self.directory / "spool"
        return [p for p in spool.rglob("*") if p.is_file() and p.name != "url.txt"]


def _one(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(sql).fetchone()
    return None if row is None else row[0]


@contextlib.contextmanager
def writes_blocked(db: PrivateDatabase, job: Job) -> Iterator[None]:
    """Hold an exclusive lock on the metrics and jobs tables until a writer waits for it.

    Every batch of the job writes metric points or a job snapshot, so its next write blocks
    inside its transaction: a database that dies now takes a half-done transaction with it,
    not an idle connection.
    """
    import psycopg

    job.wait_until(
        "a first stored metric",
        lambda: (
            bool(_one(db.url, "SELECT to_regclass('metrics') IS NOT NULL"))
            and bool(_one(db.url, "SELECT EXISTS (SELECT 1 FROM metrics)"))
        ),
    )
    holder = psycopg.connect(db.url, connect_timeout=10)
    try:
        # Every batch has metric points or a job snapshot (a heartbeat, at the least).
        holder.execute("LOCK TABLE metrics, jobs IN ACCESS EXCLUSIVE MODE")
        job.wait_until(
            "a write waiting inside its transaction",
            lambda: bool(
                _one(
                    db.url,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()",
                )
            ),
        )
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()  # dead with the server by now, or released if the test failed


@pytest.fixture
def jobs() -> Iterator[list[Job]]:
    """Jobs a test started, killed if the test failed before they ended."""
    started: list[Job] = []
    yield started
    for job in started:
        job.kill()


def stored_counts(url: str, job_id: str, batch_id: str) -> dict[str, Any]:
    """What the database holds for the job, counted by row and by key."""
    import psycopg

    with psycopg.connect(url) as conn:
        metrics = conn.execute(
            "SELECT count(*), count(DISTINCT step), min(step), max(step), sum(value) "
            "FROM metrics WHERE job_id = %s AND name = 'loss'",
            (job_id,),
        ).fetchone()
        spans = conn.execute(
            "SELECT count(*), count(DISTINCT (trace_id, span_id)), "
            "count(DISTINCT info->>'step') FROM spans WHERE job_id = %s AND name = 'work'",
            (job_id,),
        ).fetchone()
        items = conn.execute(
            "SELECT count(*), count(DISTINCT name), sum(samples) FROM items WHERE job_id = %s",
            (batch_id,),
        ).fetchone()
        statuses: dict[str, str] = dict(
            conn.execute(
                "SELECT id, status FROM jobs WHERE id = ANY(%s)", ([job_id, batch_id],)
            ).fetchall()
        )
    assert metrics is not None and spans is not None and items is not None
    return {"metrics": metrics, "spans": spans, "items": items, "statuses": statuses}


def assert_stored_exactly_once(url: str, job: Job, counts: dict[str, Any] | None = None) -> None:
    """Every record the job sent is stored once: each count by row equals the count by
    key equals what was sent, the values are the ones sent, and the spool is empty."""
    counts = counts or job.finish()
    sent = counts["sent"]
    assert sent >= (CHUNKS_BEFORE + CHUNKS_AFTER) * CHUNK
    found = stored_counts(url, counts["job"], counts["batch"])
    total = sent * (sent - 1) // 2  # the sum of the steps
    assert found["metrics"] == (sent, sent, 0, sent - 1, total * 0.5)
    assert found["spans"] == (sent, sent, sent)
    assert found["items"] == (sent, sent, total)
    assert found["statuses"] == {counts["job"]: "succeeded", counts["batch"]: "succeeded"}
    # Nothing was dropped or lost on the way, and nothing is left in the spool.
    assert counts["dropped"] == 0
    assert job.spooled_files() == []


# -- the postgresql:// sink -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flush_each_chunk", "outages"),
    [pytest.param(True, 1, id="flush-each-chunk"), pytest.param(False, 3, id="writer-thread")],
)
def test_a_job_writing_to_postgresql_restarted_under_load_stores_every_record_once(
    private_pg: PrivateDatabase,
    tmp_path: Path,
    jobs: list[Job],
    flush_each_chunk: bool,
    outages: int,
) -> None:
    job = Job(tmp_path, private_pg.url, outages=outages, flush_each_chunk=flush_each_chunk)
    jobs.append(job)
    job.wait_for("running")
    for number in range(outages):
        # As if the database machine lost power mid-job: connections in use die
        # mid-statement, and the next start runs crash recovery.
        job.outage(number, private_pg, "immediate", mid_write=True)
    assert_stored_exactly_once(private_pg.url, job)


def test_a_job_started_while_postgresql_is_down_loses_nothing_once_it_is_up(
    private_pg: PrivateDatabase, tmp_path: Path, jobs: list[Job]
) -> None:
    private_pg.server.stop("fast")
    job = Job(tmp_path, private_pg.url)
    jobs.append(job)
    job.wait_for("running")  # several chunks, every one spooled
    job.outage(0, private_pg, None)
    assert_stored_exactly_once(private_pg.url, job)


def test_a_restart_between_two_writes_needs_no_spool(
    private_pg: PrivateDatabase, memory_sink: object
) -> None:
    """The sink's pooled connection died with the old server: the next write notices
    before using it and reconnects, so the restart costs nothing."""
    import jobtrace
    from jobtrace import _config
    from jobtrace.recorder import get_recorder

    _config.configure(url=private_pg.url, install_signal_handlers=False)
    recorder = get_recorder()
    # The recorder is the worker process's: earlier tests' counts are not this one's.
    spooled, dropped = recorder.spooled, recorder.dropped
    with jobtrace.job("restarts") as job:
        modes: tuple[StopMode, ...] = ("immediate", "fast")
        for step, mode in enumerate(modes):
            jobtrace.log_metric("loss", float(step), step=step)
            assert recorder.flush(timeout=30)
            private_pg.server.restart(mode)
        jobtrace.log_metric("loss", 2.0, step=2)
        assert recorder.flush(timeout=30)
        assert recorder.spooled == spooled
    assert recorder.flush(timeout=30)
    assert (recorder.spooled, recorder.dropped) == (spooled, dropped)
    found = stored_counts(private_pg.url, job.id, "-")
    assert found["metrics"] == (3, 3, 0, 2, 3.0)
    assert found["statuses"] == {job.id: "succeeded"}


def test_a_job_that_ends_while_postgresql_is_down_is_stored_by_the_next_process(
    private_pg: PrivateDatabase, tmp_path: Path, jobs: list[Job]
) -> None:
    """What the job could not write before it ended waits in its spool (its final status
    too); the next process that writes to the same store delivers it."""
    job = Job(tmp_path, private_pg.url, end_while_down=True)
    jobs.append(job)
    job.wait_for("running")
    with writes_blocked(private_pg, job):
        private_pg.server.stop("immediate")
    job.mark("down-0")
    counts = job.finish(recovered=False)
    assert job.spooled_files() != []
    private_pg.server.start()
    found = stored_counts(private_pg.url, counts["job"], counts["batch"])
    assert found["metrics"][0] < counts["sent"]
    assert found["statuses"][counts["job"]] == "running"
    next_process = subprocess.run(
        [sys.executable, "-c", "import jobtrace; assert jobtrace.flush(timeout=60)"],
        env=cli_env(job.directory, JOBTRACE_URL=private_pg.url),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert next_process.returncode == 0, next_process.stderr
    assert "Traceback" not in next_process.stderr
    assert_stored_exactly_once(private_pg.url, job, counts)


# -- through a server -----------------------------------------------------------------------


@pytest.fixture
def serve(private_pg: PrivateDatabase, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(private_pg.url, tmp_path / "server")
    server.start()
    yield server
    server.stop()


PROBE_JOB = "probe"


def post_probe(url: str, step: int) -> httpx.Response:
    """One batch of one metric point, straight to the server (as the sink sends it)."""
    record = ("metric", PROBE_JOB, "loss", step, float(step), time.time())
    # A bounded wait: a server that hangs on a dead database fails here instead of
    # holding the test.
    return httpx.post(
        url + BATCHES_PATH,
        content=encode_batch(f"probe-{step}", [record]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_a_server_whose_postgresql_restarts_under_load_answers_503_and_recovers_by_itself(
    private_pg: PrivateDatabase, serve: ServeProcess, tmp_path: Path, jobs: list[Job]
) -> None:
    assert serve.process is not None
    server_process = serve.process
    job = Job(tmp_path, serve.url)
    jobs.append(job)
    job.wait_for("running")
    assert post_probe(serve.url, 0).status_code == 201
    with writes_blocked(private_pg, job):  # a batch of the job half written
        private_pg.server.stop("immediate")
    # The database is gone: the server answers at once with a 503 in the shared error
    # body, for writes and reads alike, and does not hang.
    body = assert_error(post_probe(serve.url, 1), 503, "store_unavailable")
    assert str(private_pg.server.port) not in body["message"]  # the database stays private
    assert_error(httpx.get(f"{serve.url}/api/v1/jobs", timeout=30), 503, "store_unavailable")
    assert_error(httpx.get(f"{serve.url}/metrics", timeout=30), 503, "store_unavailable")
    job.outage(0, private_pg, None)
    # The same server process, never restarted, writes and reads again.
    assert post_probe(serve.url, 2).status_code == 201
    assert httpx.get(f"{serve.url}/api/v1/jobs", timeout=30).status_code == 200
    assert httpx.get(f"{serve.url}/metrics", timeout=30).status_code == 200
    assert_stored_exactly_once(private_pg.url, job)
    assert serve.process is server_process and server_process.poll() is None
    assert "Traceback" not in serve.log.read_text()
    found = stored_counts(private_pg.url, PROBE_JOB, "-")["metrics"]
    assert found[:4] == (2, 2, 0, 2)  # the probes the server accepted, and only those


def test_a_server_answers_its_first_request_after_a_postgresql_restart(
    private_pg: PrivateDatabase, serve: ServeProcess
) -> None:
    """Connections pooled before the restart are dead; none of them reaches a request."""
    assert post_probe(serve.url, 0).status_code == 201
    assert httpx.get(f"{serve.url}/api/v1/jobs", timeout=30).status_code == 200
    modes: tuple[StopMode, ...] = ("immediate", "fast")
    for step, mode in enumerate(modes, 1):
        private_pg.server.restart(mode)
        assert post_probe(serve.url, step).status_code == 201
        private_pg.server.restart(mode)
        assert httpx.get(f"{serve.url}/api/v1/jobs", timeout=30).status_code == 200
    assert stored_counts(private_pg.url, PROBE_JOB, "-")["metrics"][:4] == (3, 3, 0, 2)
    assert "Traceback" not in serve.log.read_text()


def test_a_job_sending_to_a_server_whose_postgresql_is_down_loses_nothing_once_it_is_up(
    private_pg: PrivateDatabase, serve: ServeProcess, tmp_path: Path, jobs: list[Job]
) -> None:
    private_pg.server.stop("fast")
    job = Job(tmp_path, serve.url)
    jobs.append(job)
    job.wait_for("running")
    job.outage(0, private_pg, None)
    assert_stored_exactly_once(private_pg.url, job)


def test_a_private_server_left_by_a_dead_session_is_reaped_by_the_next(
    private_postgres: PrivatePostgres,
) -> None:
    orphan = PrivatePostgres.create()
    try:
        session = subprocess.Popen([sys.executable, "-c", "pass"])
        session.wait()  # a session that ended without cleaning up
        assert orphan.is_ready()
        (orphan.root / "owner.pid").write_text(str(session.pid))
        reaped = reap_orphans(orphan.bin_dir, orphan._as_user)
        assert orphan.root in reaped and private_postgres.root not in reaped
        assert not orphan.root.exists() and not orphan.is_ready()
    finally:
        orphan.destroy()
