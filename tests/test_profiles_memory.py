"""Peak-memory profiles: attribution with known ground truth, the exact mode, fallbacks,
read-back from a store, the CLI, threads and child processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import _config, model
from jobtrace.profiles import folded, memory
from jobtrace.sinks.memory import MemorySink

MB = 1024 * 1024
BUFFER = 300 * MB
IN_CI = os.environ.get("CI") == "true"
TRACKER_BUILT = _config.load_extension("_memtrack") is not None

# Attribution needs the compiled tracker: optional where there is no compiler, never
# missing under CI.
PURE_PYTHON_REQUESTED = bool(os.environ.get(_config.ENV_NO_EXTENSIONS))
needs_tracker = pytest.mark.skipif(
    not TRACKER_BUILT and (not IN_CI or PURE_PYTHON_REQUESTED),
    reason="jobtrace._memtrack was not built (no compiler) or JOBTRACE_NO_EXTENSIONS is set",
)


def profile_of(sink: MemorySink, job_id: str) -> folded.JobProfile:
    """The job's profile as a reader gets it: (type, format, data, created_at) rows."""
    jobtrace.flush()
    rows = [r for r in sink.of_kind(model.PROFILE) if r[2] == job_id]
    return folded.load_job_profile((r[3], r[4], r[5], r[6]) for r in rows)


def attributed(profile: folded.JobProfile, function: str) -> int:
    """Bytes of the memory profile in stacks with a frame of ``function`` (by name)."""
    stacks = profile.memory.stacks
    return sum(w for s, w in stacks.items() if any(f"{function} (" in f for f in s))


def share(profile: folded.JobProfile, function: str) -> float:
    """Fraction of the memory profile's total (the peak) attributed to ``function``."""
    return attributed(profile, function) / profile.memory.total


def hold_bytes() -> Any:
    return b"x" * BUFFER


def run_job(make: Callable[[], Any], mode: str) -> jobtrace.Job:
    with jobtrace.job("peak", memory=mode) as job:
        buffer = make()
        del buffer
        small = [str(i) for i in range(10_000)]  # after the peak: not in it
        del small
    return job


# A job in a fresh interpreter, as `jobtrace run` or a worker would run it: the test
# process has grown too large by now for a 300 MB buffer to be 80 % of its peak.
GROUND_TRUTH = """
import sys

import jobtrace

store, job_id, mode, kind = sys.argv[1:]
BUFFER = 300 * 1024 * 1024


def hold_bytes():
    return b"x" * BUFFER


def hold_bytearray():
    return bytearray(b"y") * BUFFER


def hold_numpy():
    import numpy as np

    return np.ones(BUFFER // 8)


def hold_small_objects():  # ~3 M small strings, about 200 MB in pymalloc's arenas
    return [str(i) * 2 for i in range(3_000_000)]


jobtrace.configure(url=store)
with jobtrace.job("peak", job_id=job_id, memory=mode):
    buffer = globals()["hold_" + kind]()
    del buffer
    small = [str(i) for i in range(10_000)]  # after the peak: not in it
    del small
print("ground truth: done")
"""


# Starts its arguments as a process and exits without waiting for it, so the big process
# is not a waited-for child of the test process: its peak would otherwise stay in this
# process's RUSAGE_CHILDREN high-water mark and hide smaller children from later tests.
_DETACH = "import subprocess, sys; subprocess.Popen(sys.argv[1:])"
_DONE = "ground truth: done"


def run_detached(args: list[str], cwd: Path) -> str:
    """Run ``args`` as an orphaned grandchild; its stdout and stderr, once it has exited
    (reading the pipe to its end waits for that)."""
    done = subprocess.run(
        [sys.executable, "-c", _DETACH, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def run_ground_truth(tmp_path: Path, mode: str, kind: str) -> tuple[folded.JobProfile, int]:
    """(the job's profile read back from its SQLite store, the job's stored peak)."""
    if kind == "numpy":
        pytest.importorskip("numpy")
    script = tmp_path / "ground_truth.py"
    script.write_text(GROUND_TRUTH)
    db = tmp_path / f"{mode}-{kind}.db"
    job_id = f"{mode}-{kind}"
    output = run_detached(
        [sys.executable, str(script), f"sqlite:///{db}", job_id, mode, kind], tmp_path
    )
    assert output.rstrip().endswith(_DONE), output
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT type, format, data, created_at FROM profiles WHERE job_id = ?", (job_id,)
        ).fetchall()
        (stored_peak,) = conn.execute(
            "SELECT peak_memory_kb FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    return folded.load_job_profile(rows), stored_peak


KINDS = ["bytes", "bytearray", "numpy"]


@needs_tracker
@pytest.mark.parametrize("kind", [*KINDS, "small_objects"])
def test_the_approximate_profile_attributes_a_300_mb_peak_to_its_function(
    tmp_path: Path, kind: str
) -> None:
    profile, stored_peak = run_ground_truth(tmp_path, "approximate", kind)
    assert profile.memory_mode == "approximate"
    assert share(profile, f"hold_{kind}") >= 0.8
    # The job's stored peak (report.json's and the ReportResult's) is the profile's peak,
    # and the profile's stacks add up to it.
    ((process, peak_kb),) = profile.peak_kb.items()
    assert process.startswith("process ") and process.endswith(" (main)")
    assert peak_kb == stored_peak
    assert abs(profile.memory.total - peak_kb * 1024) < 1024
    if kind != "small_objects":
        assert peak_kb * 1024 >= BUFFER
    # Every stack starts at the job's own code: jobtrace's frames are cut from the root.
    assert profile.memory.folded().splitlines()[0].startswith(f"{process};")


@needs_tracker
@pytest.mark.parametrize("kind", KINDS)
def test_the_exact_mode_agrees_with_the_approximate_one(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("memray")
    exact, stored_peak = run_ground_truth(tmp_path, "exact", kind)
    approximate, _ = run_ground_truth(tmp_path, "approximate", kind)
    assert exact.memory_mode == "exact"
    assert list(exact.peak_kb.values()) == [stored_peak]
    assert share(exact, f"hold_{kind}") >= 0.8
    assert attributed(exact, f"hold_{kind}") == pytest.approx(
        attributed(approximate, f"hold_{kind}"), rel=0.02
    )


@needs_tracker
def test_the_job_result_carries_the_profiles_peak(memory_sink: MemorySink) -> None:
    job = run_job(hold_bytes, "approximate")
    profile = profile_of(memory_sink, job.id)
    assert attributed(profile, "hold_bytes") >= BUFFER * 0.98
    assert job.result is not None
    assert [job.result.peak_memory_kb] == [job.peak_memory_kb] == list(profile.peak_kb.values())
    assert list(profile.peak_kb) == [f"process {os.getpid()} (main)"]


def test_off_records_no_memory_profile(memory_sink: MemorySink) -> None:
    job = run_job(hold_bytes, "off")
    profile = profile_of(memory_sink, job.id)
    assert not profile.memory.stacks and profile.memory_mode is None
    assert job.peak_memory_kb > 0


def test_the_environment_chooses_the_mode_and_bad_modes_are_refused(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_config.ENV_MEMORY, "off")
    _config.configure(url=f"memory://{memory_sink.name}", install_signal_handlers=False)
    assert profile_of(memory_sink, run_job(hold_bytes, "off").id).memory_mode is None
    with jobtrace.job("env") as job:
        pass
    assert profile_of(memory_sink, job.id).memory_mode is None
    with pytest.raises(jobtrace.ConfigurationError, match="JOBTRACE_MEMORY"):
        _config.resolve(env={_config.ENV_MEMORY: "everything"})
    with pytest.raises(jobtrace.ConfigurationError, match="memory='precise'"):
        jobtrace.job("bad", memory="precise")


def test_without_the_extension_the_peak_is_recorded_unattributed(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_config.ENV_NO_EXTENSIONS, "1")
    job = run_job(hold_bytes, "approximate")
    profile = profile_of(memory_sink, job.id)
    ((stack, size),) = profile.memory.stacks.items()
    assert stack[-1] == memory.NOT_ATTRIBUTED
    assert size == job.peak_memory_kb * 1024


@needs_tracker
def test_exact_without_memray_falls_back_with_a_warning(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "memray", None)  # import memray raises ImportError
    job = run_job(hold_bytes, "exact")
    profile = profile_of(memory_sink, job.id)
    assert profile.memory_mode == "approximate"
    assert attributed(profile, "hold_bytes") >= BUFFER * 0.98
    assert any("jobtrace[memray]" in r.getMessage() for r in caplog.records)


@needs_tracker
def test_a_failing_tracker_never_reaches_the_program(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("tracker broke")

    monkeypatch.setattr(memory._SampledTracker, "peak", broken)
    with jobtrace.job("robust") as job:
        data = hold_bytes()
        job.heartbeat()
    del data
    assert job.status == "succeeded" and job.peak_memory_kb > 0
    monkeypatch.setattr(memory, "_load_tracker", broken)
    with jobtrace.job("robust-too") as job:
        pass
    assert job.status == "succeeded"


@needs_tracker
def test_allocations_in_worker_threads_are_attributed(memory_sink: MemorySink) -> None:
    np = pytest.importorskip("numpy")
    held: list[Any] = []

    def fill_in_thread() -> None:
        held.append(np.ones(BUFFER // 8))  # numpy's default handler, hooked for all threads

    with jobtrace.job("threads") as job:
        worker = threading.Thread(target=fill_in_thread)
        worker.start()
        worker.join()
        held.clear()
    profile = profile_of(memory_sink, job.id)
    assert attributed(profile, "fill_in_thread") >= BUFFER * 0.98


@needs_tracker
def test_a_nested_job_keeps_the_outer_jobs_peak(memory_sink: MemorySink) -> None:
    with jobtrace.job("outer") as outer:
        data = hold_bytes()
        del data
        with jobtrace.job("inner") as inner:
            pass
    assert attributed(profile_of(memory_sink, outer.id), "hold_bytes") >= BUFFER * 0.98
    assert attributed(profile_of(memory_sink, inner.id), "hold_bytes") == 0


@needs_tracker
def test_a_heartbeat_records_the_profile_so_far_when_the_peak_grew(
    memory_sink: MemorySink,
) -> None:
    job = jobtrace.job("long").start()
    try:
        data = hold_bytes()
        job.heartbeat()
        profile = profile_of(memory_sink, job.id)
        assert attributed(profile, "hold_bytes") >= BUFFER * 0.98
        job.heartbeat()  # the peak did not grow: nothing new
        jobtrace.flush()
        # (The time profile's records arrive too, as often as a loaded machine makes it.)
        memory_records = [
            r for r in memory_sink.of_kind(model.PROFILE) if r[2] == job.id and r[3] == "memory"
        ]
        assert len(memory_records) == 1
        del data
    finally:
        job.finish()


def _child_allocates() -> None:
    data = b"z" * (100 * MB)
    del data


@needs_tracker
@pytest.mark.skipif(sys.platform != "linux", reason="the fork and forkserver start methods")
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_child_records_its_own_peak(method: str, tmp_path: Path) -> None:
    db = tmp_path / "children.db"
    _config.configure(url=f"sqlite:///{db}", install_signal_handlers=False)
    ctx = multiprocessing.get_context(method)
    with jobtrace.job("parent") as job:
        child = ctx.Process(target=_child_allocates, name="worker-1")
        child.start()
        child.join()
    assert child.exitcode == 0
    jobtrace.flush()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT type, format, data, created_at FROM profiles WHERE job_id = ?", (job.id,)
        ).fetchall()
    profile = folded.load_job_profile(rows)
    label = f"process {child.pid} (worker-1)"
    assert set(profile.peak_kb) == {f"process {os.getpid()} (main)", label}
    in_child = sum(
        w
        for s, w in profile.memory.stacks.items()
        if s[0] == label and any("_child_allocates (" in f for f in s)
    )
    assert in_child >= 100 * MB * 0.98


@needs_tracker
def test_the_cli_profiles_memory_of_a_script_importing_numpy(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import numpy as np

            def build():
                return np.ones(300 * 1024 * 1024 // 8)

            data = build()
            print("ground truth: done")
            """
        )
    )
    db = tmp_path / "cli.db"
    for mode in ("approximate", "off"):
        output = run_detached(
            [
                *(sys.executable, "-m", "jobtrace", "run", "-q", "--store", f"sqlite:///{db}"),
                *("--job-id", f"cli-{mode}", "--memory", mode, str(script)),
            ],
            tmp_path,
        )
        assert output.rstrip().endswith(_DONE), output
    with sqlite3.connect(db) as conn:
        rows = {
            job_id: conn.execute(
                "SELECT type, format, data, created_at FROM profiles WHERE job_id = ?",
                (job_id,),
            ).fetchall()
            for job_id in ("cli-approximate", "cli-off")
        }
    profile = folded.load_job_profile(rows["cli-approximate"])
    assert share(profile, "build") >= 0.8
    # jobtrace's own frames (the CLI, runpy) are cut from the stacks' roots.
    assert any(s[1].startswith("<module> (script.py:") for s in profile.memory.stacks)
    assert not any("runpy" in s[1] or "jobtrace/" in s[1] for s in profile.memory.stacks)
    assert folded.load_job_profile(rows["cli-off"]).memory.total == 0


@needs_tracker
def test_tracking_stops_cleanly_when_tracemalloc_wrapped_it(memory_sink: MemorySink) -> None:
    import tracemalloc

    with jobtrace.job("wrapped") as job:
        tracemalloc.start()
        data = hold_bytes()
        del data
    tracemalloc.stop()  # restores our hooks, which pass everything through from now on
    after = [str(i) for i in range(1000)]
    assert len(after) == 1000 and job.status == "succeeded"
    assert attributed(profile_of(memory_sink, job.id), "hold_bytes") >= BUFFER * 0.98
    with jobtrace.job("after") as again:  # the hooks left in place serve the next job
        data = hold_bytes()
        del data
    assert attributed(profile_of(memory_sink, again.id), "hold_bytes") >= BUFFER * 0.98


def test_a_profile_keeps_the_large_stacks_and_sums_up_the_small_ones() -> None:
    stacks = {f"f{i} (m.py:{i})": 10 for i in range(5000)} | {"big (m.py:1)": 10_000_000}
    peak_kb, out = memory._complete((10_050_000, stacks), 0, True)
    assert out["big (m.py:1)"] == 10_000_000
    assert out[memory.SMALLER] == 50_000  # each small stack is under 1/10,000 of the peak
    assert sum(out.values()) == peak_kb * 1024
    many = {f"f{i} (m.py:{i})": 1000 + i for i in range(3000)}
    _, out = memory._complete((0, many), 0, True)
    kept = {k: v for k, v in out.items() if not k.startswith("[")}
    assert len(kept) == memory.MAX_STACKS and min(kept.values()) == 1000 + 3000 - 2000
    assert out[memory.SMALLER] == sum(range(1000, 2000))


@needs_tracker
def test_threads_allocating_with_and_without_the_gil_are_safe(memory_sink: MemorySink) -> None:
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    np = pytest.importorskip("numpy")
    payload = bytes(range(256)) * 4096  # 1 MiB

    def churn(i: int) -> int:
        total = 0
        for _ in range(20):
            # zlib allocates through PyMem_RawMalloc with the GIL released; numpy's
            # arithmetic makes temporaries; bytes go through pymalloc and RAW.
            total += len(zlib.compress(payload, 1))
            total += int((np.arange(100_000) * 2).sum() % 7)
            total += len(payload + bytes(i))
        return total

    with jobtrace.job("churn") as job:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(churn, range(32)))
        keep = [np.ones(BUFFER // 8)]
        del keep
    assert len(results) == 32 and job.status == "succeeded"
    this_test = "test_threads_allocating_with_and_without_the_gil_are_safe"
    assert attributed(profile_of(memory_sink, job.id), this_test) >= BUFFER


def test_ci_builds_the_memory_tracker() -> None:
    if not IN_CI or PURE_PYTHON_REQUESTED:
        pytest.skip("only CI promises a compiler (the extension is optional elsewhere)")
    assert TRACKER_BUILT, "jobtrace._memtrack did not build: memory profiles are unattributed"
