"""End to end through `jobtrace serve` in a subprocess: a job run with `jobtrace run` and
JOBTRACE_URL=http://… logs metrics that the client reads back, and nothing is lost or stored
twice when the server is killed and restarted while the job logs to it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from jobtrace.client import Client, to_float
from jobtrace.store import Store
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.server_helpers import ServeProcess

STEPS = 600


@pytest.fixture
def serve(store_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(store_url, tmp_path / "server")
    server.start()
    yield server
    server.stop()


def metric_steps(store_url: str, job_id: str) -> list[int]:
    with Store(store_url) as store, store.engine.connect() as conn:
        query = sa.text("SELECT step FROM metrics WHERE job_id = :j ORDER BY step")
        return [int(r[0]) for r in conn.execute(query, {"j": job_id})]


def test_a_job_run_with_an_http_url_reaches_the_store(
    serve: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import jobtrace
            for step in range(100):
                jobtrace.log_metric("loss", 1.0 / (step + 1), step=step)
            for step, value in enumerate([float("nan"), float("inf"), float("-inf")]):
                jobtrace.log_metric("special", value, step=step)
            with jobtrace.Trace("work"):
                pass
            """
        )
    )
    result = jobtrace_cli(
        "run",
        "--job-id",
        "http-job",
        "-e",
        "remote",
        str(script),
        cwd=tmp_path,
        JOBTRACE_URL=serve.url,
    )
    assert result.returncode == 0, result.stderr
    job = httpx.get(f"{serve.url}/api/v1/jobs/http-job").json()
    assert (job["status"], job["experiment"], job["exitCode"]) == ("succeeded", "remote", 0)
    traces = httpx.get(f"{serve.url}/api/v1/traces", params={"jobId": "http-job"}).json()
    assert [t["name"] for t in traces["data"]] == ["work"]
    assert metric_steps(store_url, "http-job") == sorted([*range(100), *range(3)])
    with Client(serve.url) as client:
        latest = client.jobs.get_metrics_by_id("http-job")
        assert [(p["name"], p["value"], p["step"]) for p in latest] == [
            ("loss", 0.01, 99),
            ("special", "-inf", 2),
        ]
        history = list(client.jobs.iter_metric_snapshots("http-job", "loss", page_length=30))
        assert [p["step"] for p in history] == list(range(100))
        assert [to_float(p["value"]) for p in history] == [1.0 / (s + 1) for s in range(100)]
        specials = client.jobs.get_metrics_snapshots_by_id("http-job", "special")["data"]
        assert [p["value"] for p in specials] == ["nan", "inf", "-inf"]
        found = client.experiments.get_metrics_by_id("remote", search="metric.loss<0.1")
        assert [j["id"] for j in found["data"]] == ["http-job"]


JOB_SCRIPT = """
import sys, time
from pathlib import Path
import jobtrace
from jobtrace.recorder import record

marks = Path(sys.argv[1])
job = jobtrace.current_job()

def log(steps):
    for step in steps:
        record(("metric", job.id, "loss", step, step * 0.5, time.time()))
    jobtrace.flush()

def wait_for(name):
    deadline = time.monotonic() + 120
    while not (marks / name).exists():
        assert time.monotonic() < deadline, name
        time.sleep(0.01)

log(range(0, 200))
(marks / "logged-while-up").touch()
wait_for("server-killed")
log(range(200, 400))          # the server is down: these are spooled
(marks / "logged-while-down").touch()
wait_for("server-restarted")
log(range(400, {steps}))      # replays the spool first, then sends these
"""


def test_the_server_killed_and_restarted_while_a_job_logs_loses_and_duplicates_nothing(
    serve: ServeProcess, store_url: str, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT.format(steps=STEPS))
    job = subprocess.Popen(
        [sys.executable, "-m", "jobtrace", "run", "--job-id", "k1", str(script), str(marks)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace", JOBTRACE_URL=serve.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_file(marks / "logged-while-up", job)
        serve.kill()
        (marks / "server-killed").touch()
        wait_for_file(marks / "logged-while-down", job)
        serve.start()  # same port, same store
        (marks / "server-restarted").touch()
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, stderr
    assert "spooling records" in stderr and "reachable again" in stderr
    assert metric_steps(store_url, "k1") == list(range(STEPS))
    with Store(store_url) as store, store.engine.connect() as conn:
        batches = conn.execute(sa.text("SELECT records FROM ingested_batches")).all()
        status = conn.execute(sa.text("SELECT status FROM jobs WHERE id = 'k1'")).scalar_one()
    assert status == "succeeded"
    # Every batch was acknowledged once: no batch id was stored twice under another name,
    # and the records the batches carried add up to what the job sent (metrics plus its
    # job snapshots), never more.
    assert sum(r[0] for r in batches) >= STEPS
    spooled = (tmp_path / ".jobtrace" / "spool").rglob("*")
    assert [p.name for p in spooled if p.is_file() and p.name != "url.txt"] == []


def wait_for_file(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the job exited early ({process.returncode}): {stderr}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)
