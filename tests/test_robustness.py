"""Regressions for defects found in review: bad values, signals inside locks, reused ids,
multiprocessing children, replay order, the user's random stream, secrets in messages."""

from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import jobtrace
from jobtrace import _config, model
from jobtrace.recorder import Recorder
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store, schema
from tests.cli_helpers import cli_env, jobs_json, jobtrace_cli


def job_record(job_id: str, **over: Any) -> model.Record:
    fields = dict.fromkeys(model.FIELDS[model.JOB])
    fields.update(id=job_id, seq=1, status="running", start_time=1.0)
    fields.update(over)
    return (model.JOB, *fields.values())


def test_records_the_database_refuses_are_dropped_alone(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(store_url)
    store.write(
        [
            job_record("good"),
            job_record("too-long", name="x" * 600),
            job_record("nul", error_message="a\x00b"),
            job_record("bool-exit", exit_code=True),
            job_record("surrogate", name="bad\udcff"),
            (model.METRIC, "good", "loss", 1, 0.5, 1.0),
        ]
    )
    with store.engine.connect() as conn:
        ids = set(conn.execute(sa.select(schema.jobs.c.id)).scalars())
        metrics = conn.execute(sa.select(sa.func.count()).select_from(schema.metrics)).scalar()
    assert "good" in ids and metrics == 1
    # SQLite is lenient about some of these; whatever it refuses is logged, never raised.
    refused = {"too-long", "nul", "bool-exit", "surrogate"} - ids
    assert sum("store refused" in r.getMessage() for r in caplog.records) == len(refused)
    store.close()


def test_job_fields_are_cleaned_so_the_store_accepts_them(memory_sink: MemorySink) -> None:
    with pytest.raises(SystemExit), jobtrace.job("n" * 1000, tags={"k\udc80": "v\x00"}) as job:
        raise SystemExit(True)
    jobtrace.flush()
    final = dict(zip(model.FIELDS[model.JOB], memory_sink.of_kind(model.JOB)[-1][1:], strict=True))
    assert len(final["name"]) == 512 and final["exit_code"] == 1
    assert final["tags"] == {"k\\udc80": "v\ufffd"}  # NUL replaced, as on every path
    assert job.status == "failed"


def test_run_with_an_undecodable_argument_behaves_like_python(tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("import sys\nprint(len(sys.argv))\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobtrace",
            "run",
            "-q",
            str(script),
            b"\xff".decode("utf-8", "surrogateescape"),
        ],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    [job] = jobs_json(tmp_path)
    assert job["status"] == "succeeded" and job["argv"][-1] == "\\udcff"


def test_a_rerun_under_the_same_job_id_replaces_the_first(tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text("pass\n")
    bad = tmp_path / "bad.py"
    bad.write_text("raise SystemExit(3)\n")
    jobtrace_cli("run", "--job-id", "etl-42", str(ok), cwd=tmp_path, check=True)
    assert jobtrace_cli("run", "--job-id", "etl-42", str(bad), cwd=tmp_path).returncode == 3
    [job] = jobs_json(tmp_path)
    assert (job["id"], job["status"], job["exit_code"], job["name"]) == (
        "etl-42",
        "failed",
        3,
        "bad",
    )


def test_child_processes_do_not_inherit_the_environment_job_id(tmp_path: Path) -> None:
    parent = tmp_path / "parent.py"
    parent.write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            code = "import jobtrace\\nwith jobtrace.job('child-step'): pass"
            subprocess.run([sys.executable, "-c", code], check=True)
            """
        )
    )
    jobtrace_cli("run", str(parent), cwd=tmp_path, check=True, JOBTRACE_JOB_ID="etl-42")
    jobs = {j["name"]: j["id"] for j in jobs_json(tmp_path)}
    assert jobs["parent"] == "etl-42" and jobs["child-step"] != "etl-42"


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_multiprocessing_workers_record_even_if_the_parent_never_did(
    tmp_path: Path, method: str
) -> None:
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, jobtrace
            def work(i):
                with jobtrace.job(f"item-{{i}}"):
                    return i * i
            if __name__ == "__main__":
                with mp.get_context("{method}").Pool(2) as pool:
                    print(sum(pool.map(work, range(6))))
                    pool.close()
                    pool.join()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "55"
    assert sorted(j["name"] for j in jobs_json(tmp_path)) == [f"item-{i}" for i in range(6)]


def test_spooled_batches_are_replayed_before_newer_ones(tmp_path: Path) -> None:
    sink = MemorySink.named("order")
    sink.fail_with = ConnectionError("down")
    settings = _config.resolve(
        url="memory://order", directory=str(tmp_path), install_signal_handlers=False
    )
    recorder = Recorder(settings)
    recorder.record((model.METRIC, "j", "x", 1, 1.0, 1.0))
    recorder.flush()
    sink.fail_with = None
    recorder.record((model.METRIC, "j", "x", 1, 2.0, 2.0))
    recorder.flush()
    assert [r[4] for r in sink.records] == [1.0, 2.0]  # the older value first, so 2.0 wins


def test_ids_do_not_disturb_the_programs_random_stream() -> None:
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    with jobtrace.job("draws-ids"):
        pass
    assert random.random() == expected


def test_passwords_never_reach_messages_or_spool_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "postgresql://jobtrace:hunter2@127.0.0.1:1/nowhere"
    assert _config.mask_url(url) == "postgresql://jobtrace:***@127.0.0.1:1/nowhere"
    settings = _config.resolve(url=url, directory=str(tmp_path), install_signal_handlers=False)
    recorder = Recorder(settings)
    recorder.record((model.METRIC, "j", "x", 1, 1.0, 1.0))
    with caplog.at_level(logging.WARNING):
        recorder.flush()
    assert recorder.spooled == 1
    assert "hunter2" not in caplog.text and "***" in caplog.text
    for path in (tmp_path / "spool").rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes()


def test_disabled_recording_leaves_no_trace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobtrace")
    _config.configure(url="memory://off", enabled=False, install_signal_handlers=False)
    with jobtrace.job("quiet") as job:
        assert jobtrace.current_job() is job
    jobtrace.flush()
    assert MemorySink.named("off").records == []
    assert not (tmp_path / "jt" / "reports").exists()
    assert not any(isinstance(r.msg, jobtrace.ReportResult) for r in caplog.records)


def run_script(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, *args, str(script)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sigterm_inside_job_bookkeeping_does_not_hang(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        import os, signal, jobtrace
        from jobtrace import _resources
        real_reset = _resources.reset_peak
        def reset_then_terminate():
            real_reset()
            os.kill(os.getpid(), signal.SIGTERM)  # lands while the job registry is locked
        with jobtrace.job("outer"):
            _resources.reset_peak = reset_then_terminate
            with jobtrace.job("inner"):
                pass
        """,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert [j["status"] for j in jobs_json(tmp_path)] == ["killed"]


def test_installing_signal_handlers_twice_does_not_chain_to_itself(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        import os, signal
        from jobtrace.recorder import get_recorder
        rec = get_recorder()
        rec.install_signal_handlers()
        rec.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        """,
    )
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert "RecursionError" not in result.stderr


def test_run_waits_for_non_daemon_threads_like_python(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        import threading, time
        def late():
            time.sleep(0.3)
            open("done.txt", "w").write(repr(time.time()))
        threading.Thread(target=late).start()
        """,
        "-m",
        "jobtrace",
        "run",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    [job] = jobs_json(tmp_path)
    assert job["duration"] >= 0.3
    thread_finished = float((tmp_path / "done.txt").read_text())
    assert _epoch(job["end_time"]) + 0.002 >= thread_finished


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_an_uncaught_keyboard_interrupt_runs_exit_handlers_then_dies_by_sigint(
    tmp_path: Path,
) -> None:
    result = run_script(
        tmp_path,
        """
        import atexit
        atexit.register(lambda: print("exit handler ran", flush=True))
        raise KeyboardInterrupt
        """,
        "-m",
        "jobtrace",
        "run",
        "-q",
    )
    assert result.returncode == -signal.SIGINT
    assert "exit handler ran" in result.stdout
    [job] = jobs_json(tmp_path)
    assert job["status"] == "killed"


def test_a_caught_ctrl_c_followed_by_a_clean_exit_is_a_success(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
        import os, signal, sys
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass
        sys.exit(0)
        """,
        "-m",
        "jobtrace",
        "run",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    [job] = jobs_json(tmp_path)
    assert job["status"] == "succeeded"


def test_job_names_are_shown_literally_in_tables(tmp_path: Path) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text("pass\n")
    jobtrace_cli("run", "--name", "[bold]x[/] :fire: end\\", str(ok), cwd=tmp_path, check=True)
    table = jobtrace_cli("jobs", "list", cwd=tmp_path, check=True).stdout
    assert "[bold]x[/] :fire: end\\" in table
