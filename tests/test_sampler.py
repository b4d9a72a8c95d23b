"""The sampler's profiles against known ground truth: wall/CPU split, a GIL-holding C call,
threads, thread pools and asyncio, jobtrace's own threads left out, launcher frames trimmed.

Proportions are asserted with generous tolerances against what the workload measured about
itself, never against fixed timings: the machines are shared and busy.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

import jobtrace
from jobtrace.profiles import sampler
from jobtrace.sinks.memory import MemorySink
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.sampler_helpers import as_dict, sink_profile, stored_profile, weight

SPLIT_SCRIPT = """
import json, sys, time

def burn(cpu_seconds):
    # A fixed amount of this thread's CPU time: the wall time it takes depends on the load.
    end = time.thread_time() + cpu_seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n

def nap(seconds):
    time.sleep(seconds)

truth = {"burn": 0.0, "nap": 0.0}
for _ in range(4):
    t0 = time.perf_counter()
    burn(0.28)
    t1 = time.perf_counter()
    nap(0.12)
    t2 = time.perf_counter()
    truth["burn"] += t1 - t0
    truth["nap"] += t2 - t1
with open(sys.argv[1], "w") as out:
    json.dump(truth, out)
"""


def _burn(cpu_seconds: float) -> int:
    end = time.thread_time() + cpu_seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


def test_a_job_of_work_and_sleep_shows_the_split_in_wall_time_and_all_cpu_in_the_work(
    tmp_path: Path,
) -> None:
    script = tmp_path / "split.py"
    script.write_text(SPLIT_SCRIPT)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    truth_file = tmp_path / "truth.json"
    result = jobtrace_cli(
        "run", "--job-id", "split", "--store", store, str(script), str(truth_file), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    truth = orjson.loads(truth_file.read_bytes())
    profile = stored_profile(store, "split")  # read back after the process is gone

    burn_wall = weight(profile.wall, "burn (split.py:")
    nap_wall = weight(profile.wall, "nap (split.py:")
    expected = truth["burn"] / (truth["burn"] + truth["nap"])
    assert burn_wall / (burn_wall + nap_wall) == pytest.approx(expected, abs=0.1), as_dict(profile)
    # The work's wall time is about what the workload measured for it. (Each switch from
    # one function to the other credits the gap since the last sample to the next one; on
    # a loaded machine the sampler's gaps grow, so this is a ratio, not an equality.)
    assert burn_wall / 1e6 == pytest.approx(truth["burn"], rel=0.25)
    # All of the CPU time is in the work (4 x 0.28 s of it); sleeping costs none.
    cpu_total = profile.cpu.total
    assert weight(profile.cpu, "burn (split.py:") / cpu_total > 0.85, as_dict(profile)
    assert weight(profile.cpu, "burn (split.py:") / 1e6 == pytest.approx(1.12, rel=0.2)
    # The stacks start at the script, as under `python split.py`: no `jobtrace run` frames.
    roots = {stack[1] for stack in profile.wall.stacks}
    assert not [r for r in roots if re.search(r"jobtrace/|click/|runpy", r)], roots
    assert weight(profile.wall, "<module> (split.py:1)") / profile.wall.total > 0.95
    label = next(iter(profile.wall.stacks))[0]
    assert re.fullmatch(r"process \d+ \(main\)", label)
    # The timeline: RSS and CPU use sampled by the same thread, about twice a second.
    (points,) = profile.timeline.values()
    assert len(points) >= 3
    assert all(rss > 1000 for _, rss, _ in points)
    assert max(cpu for _, _, cpu in points) > 20.0


# Catastrophic backtracking: the regex engine runs for a long time without ever releasing
# the GIL (unlike hashlib on big buffers or time.sleep). Compiled here, so the match is a
# C method called straight from _hold_the_gil, with no Python frame of its own.
_BACKTRACKING = re.compile(r"(a+)+b")


def _hold_the_gil() -> float:
    started = time.perf_counter()
    _BACKTRACKING.fullmatch("a" * 23)
    held = time.perf_counter() - started
    # The sampler looks when it next gets the GIL; on a loaded machine the OS may run it
    # a little late. Staying in the caller a moment (without the GIL) lets it look here.
    time.sleep(0.05)
    return held


def _afterwards(cpu_seconds: float) -> None:
    _burn(cpu_seconds)


def _longest_pause_of_another_thread(call: Callable[[], float]) -> float:
    """The longest time another Python thread could not run while ``call`` ran."""
    longest = 0.0
    stop = threading.Event()

    def watch() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    call()
    stop.set()
    watcher.join()
    return longest


def test_a_gil_holding_c_call_is_credited_to_its_caller(memory_sink: MemorySink) -> None:
    # The premise, checked apart from the job (a busy thread would compete with the
    # sampler for the GIL when the call returns): nothing else runs during the call.
    assert _longest_pause_of_another_thread(_hold_the_gil) >= 0.1
    # The recorder's thread stays asleep meanwhile: a third thread waiting for the GIL when
    # the call returns could let the caller run on before the sampler looks.
    jobtrace.configure(
        f"memory://{memory_sink.name}",
        flush_interval=60,
        heartbeat_interval=3600,
        install_signal_handlers=False,
    )
    held = []
    with jobtrace.job("gil", report=False) as job:
        for _ in range(3):
            held.append(_hold_the_gil())
            _afterwards(0.05)
    jobtrace.flush()
    profile = sink_profile(memory_sink, job.id)
    # The regex has no Python frame: its time shows as its caller's own (leaf) time.
    caller = weight(profile.wall, "_hold_the_gil (", leaf=True)
    assert caller / 1e6 >= 0.7 * sum(held), (held, as_dict(profile))
    assert weight(profile.cpu, "_hold_the_gil (", leaf=True) > 0
    # The function running after the call did not get the call's time.
    assert weight(profile.wall, "_afterwards (") / 1e6 < sum(held) / 2


async def _async_work() -> None:
    for _ in range(4):
        _burn(0.03)
        await asyncio.sleep(0.01)


def _thread_work() -> None:
    _burn(0.12)
    # A thread's CPU is read at samples: one that ends before the next sample takes its
    # last stretch with it. Lingering lets a sampler slowed by a loaded machine catch up.
    time.sleep(0.3)


def _pool_task(n: int) -> int:
    return _burn(0.04) + n


def test_threads_thread_pools_and_asyncio_are_profiled_and_jobtraces_threads_are_not(
    memory_sink: MemorySink,
) -> None:
    with jobtrace.job("threads", report=False) as job:
        thread = threading.Thread(target=_thread_work, name="worker")
        thread.start()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(_pool_task, range(4)))
        asyncio.run(_async_work())
        thread.join()
        jobtrace.flush()  # the recorder thread is busy while sampled: still not shown
    jobtrace.flush()
    profile = sink_profile(memory_sink, job.id)
    for name in ("_thread_work (", "_pool_task (", "_async_work ("):
        assert weight(profile.cpu, name) > 0, (name, as_dict(profile))
    # The pool's workers run in threads of their own under the executor's worker loop.
    assert weight(profile.wall, "_worker (concurrent/futures/thread.py", "_pool_task (") > 0
    assert weight(profile.cpu, "_thread_work (") / 1e6 == pytest.approx(0.12, rel=0.35)
    # jobtrace's code shows only where the job itself called it (the flush above, on a
    # slow machine): never as a thread of its own.
    test_frame = "test_threads_thread_pools_and_asyncio_are_profiled_and_jobtraces_threads"
    for stack in profile.wall.stacks:
        files = [frame.rsplit("(", 1)[-1] for frame in stack]
        if any(f.startswith(("jobtrace/recorder.py", "jobtrace/profiles/")) for f in files):
            assert any(frame.startswith(test_frame) for frame in stack), stack


def test_the_profile_is_off_when_asked(
    memory_sink: MemorySink, monkeypatch: pytest.MonkeyPatch
) -> None:
    with jobtrace.job("off", report=False, profile=False) as off:
        _burn(0.02)
    monkeypatch.setenv("JOBTRACE_PROFILE", "0")
    jobtrace.configure(f"memory://{memory_sink.name}", install_signal_handlers=False)
    with jobtrace.job("off-by-env", report=False) as env_off:
        _burn(0.02)
    with jobtrace.job("on", report=False, profile=True) as on:
        _burn(0.02)
    jobtrace.flush()
    assert sink_profile(memory_sink, off.id).empty
    assert sink_profile(memory_sink, env_off.id).empty
    assert not sink_profile(memory_sink, on.id).empty


def test_one_job_per_process_is_profiled_at_a_time(memory_sink: MemorySink) -> None:
    with jobtrace.job("outer", report=False, sample_hz=50) as outer:
        session = sampler.current_session()
        assert session is not None and (session.job_id, session.hz) == (outer.id, 50)
        with jobtrace.job("inner", report=False) as inner:
            _burn(0.03)
        assert sampler.current_session() is session
    assert sampler.current_session() is None
    jobtrace.flush()
    assert weight(sink_profile(memory_sink, outer.id).wall, "_burn (") > 0
    assert sink_profile(memory_sink, inner.id).empty


def test_a_bad_sample_rate_is_refused_with_the_range() -> None:
    with pytest.raises(jobtrace.ConfigurationError, match=r"sample_hz=0 .*\(0, 1000\]"):
        jobtrace.job("bad", sample_hz=0)


def test_the_cli_turns_the_profile_off_and_sets_the_rate(tmp_path: Path) -> None:
    script = tmp_path / "short.py"
    script.write_text(
        textwrap.dedent(
            """
            import jobtrace
            from jobtrace.profiles import sampler
            session = sampler.current_session()
            print(None if session is None else session.hz)
            """
        )
    )
    store = f"sqlite:///{tmp_path / 'store.db'}"
    off = jobtrace_cli("run", "-q", "--no-profile", "--store", store, str(script), cwd=tmp_path)
    fast = jobtrace_cli(
        "run", "-q", "--sample-hz", "250", "--store", store, str(script), cwd=tmp_path
    )
    assert (off.stdout.strip(), fast.stdout.strip()) == ("None", "250.0"), off.stderr + fast.stderr


CHILDREN_SCRIPT = """
import multiprocessing as mp
import sys
import time


def burn(cpu_seconds):
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def child_work():
    burn(0.3)


def pool_work(n):
    burn(0.1)
    return n


if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    child = ctx.Process(target=child_work)
    child.start()
    child.join()
    with ctx.Pool(2) as pool:  # ends its workers with SIGTERM
        assert pool.map(pool_work, range(4), chunksize=1) == [0, 1, 2, 3]
    burn(0.1)
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_are_profiled_into_the_job_labelled_by_process(
    method: str, tmp_path: Path
) -> None:
    script = tmp_path / "kids.py"
    script.write_text(CHILDREN_SCRIPT)
    store = f"sqlite:///{tmp_path / 'store.db'}"
    result = jobtrace_cli(
        "run", "-q", "--job-id", "kids", "--store", store, str(script), method, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    profile = stored_profile(store, "kids")
    by_process: dict[str, int] = {}
    for stack, cpu in profile.cpu.stacks.items():
        kind = stack[0].rsplit("(", 1)[-1].rstrip(")")
        if any(frame.startswith(("child_work (", "pool_work (")) for frame in stack):
            by_process[kind] = by_process.get(kind, 0) + cpu
    prefix = {"fork": "Fork", "spawn": "Spawn", "forkserver": "ForkServer"}[method]
    assert by_process.get(f"{prefix}Process-1", 0) / 1e6 == pytest.approx(0.3, rel=0.3)
    workers = {k: v for k, v in by_process.items() if re.fullmatch(rf"{prefix}PoolWorker-\d+", k)}
    spooled = [p.name for p in (tmp_path / ".jobtrace").rglob("*") if p.is_file()]
    assert workers and sum(workers.values()) / 1e6 >= 0.2, (by_process, spooled, result.stderr)
    assert weight(profile.cpu, "<module> (kids.py:", "burn (kids.py:") > 0  # the main process
    assert len(profile.timeline) >= 2  # each process has its own timeline


def test_decorated_calls_are_profiled_only_when_asked(memory_sink: MemorySink) -> None:
    ids: list[str] = []

    def work() -> None:
        job = jobtrace.current_job()
        assert job is not None
        ids.append(job.id)
        _burn(0.03)

    jobtrace.job("plain")(work)()
    jobtrace.job("profiled", profile=True)(work)()
    jobtrace.flush()
    assert sink_profile(memory_sink, ids[0]).empty
    assert weight(sink_profile(memory_sink, ids[1]).cpu, "_burn (") > 0


def test_the_rate_and_the_switch_come_from_the_environment() -> None:
    from jobtrace import _config

    settings = _config.resolve(env={"JOBTRACE_SAMPLE_HZ": "250", "JOBTRACE_PROFILE": "off"})
    assert (settings.sample_hz, settings.profile) == (250.0, False)
    assert _config.resolve(env={}).profile is True
    with pytest.raises(jobtrace.ConfigurationError, match="JOBTRACE_SAMPLE_HZ"):
        _config.resolve(env={"JOBTRACE_SAMPLE_HZ": "5000"})


def test_the_process_label_matches_the_stacks(memory_sink: MemorySink) -> None:
    with jobtrace.job("label", report=False) as job:
        label = sampler.process_label()
        _burn(0.02)
    jobtrace.flush()
    assert {stack[0] for stack in sink_profile(memory_sink, job.id).wall.stacks} == {label}
    assert re.fullmatch(r"process \d+ \(main\)", sampler.process_label())


def test_multiprocessing_spawn_is_hooked_when_imported_after_the_job_starts(
    tmp_path: Path,
) -> None:
    script = tmp_path / "late.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import jobtrace
            from jobtrace.profiles.children import _SpawnFinder

            with jobtrace.job("late", report=False):
                assert "multiprocessing.spawn" not in sys.modules
                import multiprocessing.spawn
                data = multiprocessing.spawn.get_preparation_data("x")
                print(multiprocessing.spawn.get_preparation_data.__jobtrace_wrapped__,
                      "jobtrace_profile" in data,
                      any(isinstance(f, _SpawnFinder) for f in sys.meta_path))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.split() == ["True", "True", "False"], result.stderr
