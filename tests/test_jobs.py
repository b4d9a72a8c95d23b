"""Jobs through the public API: lifecycle, decorator, context, resources, report, result."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import _config, jobs
from jobtrace.model import FIELDS, JOB
from jobtrace.sinks.memory import MemorySink


def snapshots(sink: MemorySink, job_id: str) -> list[dict[str, Any]]:
    return [dict(zip(FIELDS[JOB], r[1:], strict=True)) for r in sink.of_kind(JOB) if r[1] == job_id]


def test_a_job_records_start_and_successful_end(memory_sink: MemorySink) -> None:
    with jobtrace.job("etl", experiment="nightly", tags={"team": "data"}, params={"n": 3}) as job:
        assert jobtrace.current_job() is job
    jobtrace.flush()
    first, *_, last = snapshots(memory_sink, job.id)
    assert first["status"] == "running" and first["end_time"] is None
    assert last["status"] == "succeeded"
    assert last["seq"] > first["seq"]
    assert (last["name"], last["experiment"], last["tags"], last["params"]) == (
        "etl",
        "nightly",
        {"team": "data"},
        {"n": 3},
    )
    assert last["duration"] >= 0 and last["end_time"] >= last["start_time"]
    assert last["cpu_user"] >= 0 and last["pid"] > 0 and last["host"]
    assert jobtrace.current_job() is None


def test_an_exception_fails_the_job_and_propagates_unchanged(memory_sink: MemorySink) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom, match="kaboom"), jobtrace.job("bad") as job:
        raise Boom("kaboom")
    jobtrace.flush()
    last = snapshots(memory_sink, job.id)[-1]
    assert last["status"] == "failed"
    assert last["error_type"].endswith("Boom") and last["error_message"] == "kaboom"


def test_keyboard_interrupt_reads_killed(memory_sink: MemorySink) -> None:
    with pytest.raises(KeyboardInterrupt), jobtrace.job("interrupted") as job:
        raise KeyboardInterrupt
    assert job.status == "killed"


def test_decorator_runs_each_call_as_a_new_job(memory_sink: MemorySink) -> None:
    @jobtrace.job(experiment="decorated")
    def step(x: int) -> int:
        current = jobtrace.current_job()
        assert current is not None
        return x * 2

    assert step(2) == 4 and step(3) == 6
    jobtrace.flush()
    finals = [dict(zip(FIELDS[JOB], r[1:], strict=True)) for r in memory_sink.of_kind(JOB)]
    ids = {f["id"] for f in finals}
    assert len(ids) == 2
    assert {f["name"] for f in finals} == {
        "test_decorator_runs_each_call_as_a_new_job.<locals>.step"
    }


def test_bare_decorator_and_async_functions(memory_sink: MemorySink) -> None:
    @jobtrace.job
    async def fetch() -> str:
        await asyncio.sleep(0)
        job = jobtrace.current_job()
        assert job is not None
        return job.id

    job_id = asyncio.run(fetch())
    jobtrace.flush()
    assert snapshots(memory_sink, job_id)[-1]["status"] == "succeeded"


def test_nested_jobs_restore_the_outer_one(memory_sink: MemorySink) -> None:
    with jobtrace.job("outer") as outer:
        with jobtrace.job("inner") as inner:
            assert jobtrace.current_job() is inner
        assert jobtrace.current_job() is outer


def test_job_ids_are_time_ordered_and_validated() -> None:
    with jobtrace.job("a") as a, jobtrace.job("b") as b:
        pass
    assert a.id < b.id and len(a.id) == 26
    with pytest.raises(jobtrace.ConfigurationError, match="not valid"):
        jobtrace.job("x", job_id="has space")


def test_the_environment_job_id_names_the_first_job_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "_env_job_id_used", False)
    monkeypatch.setenv(_config.ENV_JOB_ID, "given-by-env")
    with jobtrace.job("first") as first, jobtrace.job("nested") as nested:
        pass
    assert first.id == "given-by-env" and nested.id != "given-by-env"


def test_unserialisable_tags_are_kept_as_repr_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    job = jobtrace.job("t", tags={"ok": 1, "weird": Opaque()})
    assert job.tags == {"ok": 1, "weird": "<opaque>"}
    assert sum("not JSON-serialisable" in r.getMessage() for r in caplog.records) == 1


def test_peak_memory_sees_a_large_allocation() -> None:
    with jobtrace.job("alloc") as job:
        block = bytearray(200 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
        del block
    assert job.peak_memory_kb >= 150 * 1024


def test_a_nested_job_does_not_hide_the_outer_jobs_peak() -> None:
    with jobtrace.job("outer") as outer:
        block = bytearray(150 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])
        del block
        with jobtrace.job("inner") as inner:  # resets the process high-water mark
            pass
    assert outer.peak_memory_kb >= 120 * 1024
    assert inner.peak_memory_kb < outer.peak_memory_kb


def test_the_report_directory_holds_sciagraph_fields(isolated_jobtrace: Path) -> None:
    with jobtrace.job("reported", params={"lr": 0.1}) as job:
        pass
    report = json.loads((isolated_jobtrace / "reports" / job.id / "report.json").read_text())
    assert report["id"] == job.id
    assert isinstance(report["peak_memory_kb"], int) and report["peak_memory_kb"] > 0
    assert report["start_time_secs_since_epoch"] == job.start_time
    assert report["duration_ms"] == pytest.approx(job.duration * 1000)  # type: ignore[operator]
    assert report["status"] == "succeeded" and report["params"] == {"lr": 0.1}


def test_the_result_is_logged_as_a_report_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobtrace")
    with jobtrace.job("logged") as job:
        pass
    records = [r for r in caplog.records if isinstance(r.msg, jobtrace.ReportResult)]
    assert len(records) == 1
    result = records[0].msg
    assert isinstance(result, jobtrace.ReportResult)
    assert (result.job_id, result.status, result.peak_memory_kb) == (
        job.id,
        "succeeded",
        job.peak_memory_kb,
    )
    assert result.job_time.endswith("+00:00") and result.duration_ms >= 0
    message = records[0].getMessage()
    assert message.startswith(f"jobtrace: job {job.id} (logged) succeeded after ")
    assert f"the report is in {result.report_dir}" in message


def test_heartbeats_carry_progress(memory_sink: MemorySink) -> None:
    with jobtrace.job("beating") as job:
        job.heartbeat()
        job.heartbeat()
    jobtrace.flush()
    seqs = [s["seq"] for s in snapshots(memory_sink, job.id)]
    assert seqs == sorted(seqs) and len(seqs) == 4


def test_finish_is_idempotent_and_rejects_nonsense_statuses() -> None:
    job = jobtrace.job("manual").start()
    with pytest.raises(jobtrace.ConfigurationError):
        job.finish("lost")
    first = job.finish("succeeded")
    assert job.finish("failed") is first and job.status == "succeeded"


def test_each_job_of_a_long_lived_worker_gets_its_own_peak() -> None:
    with jobtrace.job("big") as big:
        block = bytearray(200 * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])
        del block
    with jobtrace.job("small") as small:
        pass
    assert big.peak_memory_kb - small.peak_memory_kb >= 150 * 1024


def test_peak_memory_includes_child_processes() -> None:
    import subprocess
    import sys

    code = "b = bytearray(250 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    with jobtrace.job("parent") as job:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert job.peak_memory_kb >= 200 * 1024


def test_heartbeats_sample_the_memory_of_live_children() -> None:
    import subprocess
    import sys

    code = (
        "import sys; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]);"
        "print('ready', flush=True); sys.stdin.readline()"
    )
    with jobtrace.job("tree") as job:
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        job.heartbeat()
        # Measured while the child still runs: its ru_maxrss is not ours until it is waited.
        peak_while_alive = job.peak_memory_kb
        child.stdin.close()
        child.wait()
    assert peak_while_alive >= 300 * 1024
