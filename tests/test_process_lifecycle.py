"""Whole processes: many writers on one SQLite file, SIGKILL, SIGTERM, an unwritable store."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import sqlalchemy as sa

from jobtrace.store import Store, schema
from tests.cli_helpers import cli_env, jobs_json, jobtrace_cli

WRITER = """
import sys, jobtrace, jobtrace.recorder as r
jobtrace.configure(sys.argv[1], buffer_size=1_000_000)
worker = sys.argv[2]
with jobtrace.job("writer-" + worker):
    for step in range(int(sys.argv[3])):
        r.record(("metric", "job-" + worker, "loss", step, step * 0.5, 1.0))
        if step % 5000 == 0:
            item = (f"{worker}-{step}", "job-" + worker, "f", 1.0, 0.1, 1, 1, 1, "success")
            r.record(("item", *item, None, None, None, None))
"""


def test_eight_processes_write_one_new_sqlite_file_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    per_process = 40_000
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(i), str(per_process)],
            env=cli_env(tmp_path / "jt"),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert not any("locked" in e or "spooling" in e for e in errors), errors
    store = Store(url)
    with store.engine.connect() as conn:
        per_job = dict(
            conn.execute(
                sa.select(schema.metrics.c.job_id, sa.func.count()).group_by(
                    schema.metrics.c.job_id
                )
            ).all()
        )
        items = conn.execute(sa.select(sa.func.count()).select_from(schema.items)).scalar()
    assert per_job == {f"job-{i}": per_process for i in range(8)}
    assert items == 8 * (per_process // 5000)
    assert sorted(j["status"] for j in store.list_jobs()) == ["succeeded"] * 8


KILLABLE = """
import time, jobtrace, jobtrace.recorder as r
job = jobtrace.current_job()
for step in range(100):
    r.record(("metric", job.id, "loss", step, 1.0 / (step + 1), time.time()))
jobtrace.flush()
print("flushed", job.id, flush=True)
while True:
    time.sleep(0.05)
"""


def start_killable(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobtrace", "run", str(script)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the script has flushed
    assert line.startswith("flushed"), proc.stderr.read() if proc.stderr else ""
    return proc, line.split()[1]


def test_sigkill_keeps_what_was_flushed_and_the_job_reads_lost(tmp_path: Path) -> None:
    proc, job_id = start_killable(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    store = Store(f"sqlite:///{tmp_path}/.jobtrace/jobtrace.db")
    with store.engine.connect() as conn:
        steps = (
            conn.execute(sa.select(schema.metrics.c.step).where(schema.metrics.c.job_id == job_id))
            .scalars()
            .all()
        )
    assert sorted(steps) == list(range(100))
    job = store.get_job(job_id, now=time.time())
    assert job is not None and job["status"] == "running"  # its heartbeat is still fresh
    stale = store.get_job(job_id, now=job["last_heartbeat"] + 3600)
    assert stale is not None and stale["status"] == "lost"
    assert [j["id"] for j in store.list_jobs(status="lost", now=job["last_heartbeat"] + 3600)] == [
        job_id
    ]


def test_sigterm_records_killed_and_dies_by_the_signal(tmp_path: Path) -> None:
    proc, job_id = start_killable(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    [job] = jobs_json(tmp_path)
    assert job["id"] == job_id
    assert (job["status"], job["exit_code"], job["error_type"]) == (
        "killed",
        128 + signal.SIGTERM,
        "Signal",
    )
    assert "killed" in stderr and (Path(job["report_dir"]) / "report.json").exists()


def test_sigterm_chains_to_a_handler_the_program_installed_first(tmp_path: Path) -> None:
    script = tmp_path / "graceful.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, sys, time, jobtrace
            def bye(signum, frame):
                print("cleaning up", flush=True)
                sys.exit(0)
            signal.signal(signal.SIGTERM, bye)
            with jobtrace.job("graceful"):   # jobtrace's handler goes first, then chains
                print("ready", flush=True)
                while True:
                    time.sleep(0.05)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "cleaning up" in out
    [job] = jobs_json(tmp_path)
    assert (job["name"], job["status"], job["exit_code"]) == ("graceful", "killed", 0)


def test_an_unwritable_store_spools_and_a_later_run_replays(tmp_path: Path) -> None:
    blocker = tmp_path / "stores"
    blocker.write_text("a file where the store's directory should be")
    url = f"sqlite:///{blocker}/jobs.db"
    script = tmp_path / "seven.py"
    script.write_text("print('working')\nraise SystemExit(7)\n")
    first = jobtrace_cli("run", "--store", url, str(script), cwd=tmp_path)
    assert first.returncode == 7 and first.stdout.strip() == "working"
    assert "spooling" in first.stderr

    blocker.unlink()
    blocker.mkdir()
    ok = tmp_path / "ok.py"
    ok.write_text("pass\n")
    jobtrace_cli("run", "--store", url, str(ok), cwd=tmp_path, check=True)
    jobs = {j["name"]: j for j in jobs_json(tmp_path, "--store", url)}
    assert set(jobs) == {"seven", "ok"}
    assert (jobs["seven"]["status"], jobs["seven"]["exit_code"]) == ("failed", 7)
    spooled = (tmp_path / ".jobtrace" / "spool").rglob("*")
    assert [p.name for p in spooled if p.is_file() and p.name != "url.txt"] == []


def test_sigterm_during_a_flush_on_the_main_thread_waits_for_that_flush(tmp_path: Path) -> None:
    out = tmp_path / "slow.jsonl"
    script = tmp_path / "slow_flush.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, threading, jobtrace, jobtrace.recorder as r
            from jobtrace.sinks import register_sink
            from jobtrace.sinks.file import FileSink

            class SlowSink(FileSink):
                def write(self, records):
                    os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-flush, main thread
                    super().write(records)

            register_sink("slow", "__main__:SlowSink")
            jobtrace.configure("slow://{out}", flush_interval=60)
            r.record(("metric", "j", "x", 1, 1.0, 2.0))
            r.flush()
            print("not reached", flush=True)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=cli_env(tmp_path / "jt"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "not reached" not in proc.stdout
    assert len(out.read_text().splitlines()) == 1
