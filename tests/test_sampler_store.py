"""Profiles travel the one pipeline: read back after the process is gone from SQLite,
PostgreSQL and a `jobtrace serve` server, and stay compact for a long job."""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobtrace.profiles.sampler import ProfileSession
from jobtrace.sinks import open_sink, write_batch
from jobtrace.store import Store
from tests.cli_helpers import jobtrace_cli
from tests.sampler_helpers import stored_profile, weight
from tests.server_helpers import ServeProcess

SCRIPT = textwrap.dedent(
    """
    import time

    def crunch():
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    def rest():
        time.sleep(0.2)

    crunch()
    rest()
    """
)


def _run_job(tmp_path: Path, job_id: str, **env: str) -> None:
    script = tmp_path / "crunch.py"
    script.write_text(SCRIPT)
    result = jobtrace_cli("run", "-q", "--job-id", job_id, str(script), cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr


def _assert_crunch_profile(store_url: str, job_id: str) -> None:
    profile = stored_profile(store_url, job_id)
    assert weight(profile.cpu, "crunch (crunch.py:") / 1e6 == pytest.approx(0.3, rel=0.3)
    assert weight(profile.wall, "rest (crunch.py:") / 1e6 == pytest.approx(0.2, rel=0.3)
    assert weight(profile.cpu, "rest (crunch.py:") < weight(profile.cpu, "crunch (crunch.py:") / 5
    assert profile.timeline


def test_a_job_profile_is_read_back_from_the_store_after_the_process_exits(
    store_url: str, tmp_path: Path
) -> None:
    _run_job(tmp_path, "stored", JOBTRACE_URL=store_url)
    _assert_crunch_profile(store_url, "stored")


def test_a_job_profile_sent_to_a_jobtrace_server_is_stored(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'server.db'}"
    server = ServeProcess(store_url, tmp_path / "server")
    server.start()
    try:
        _run_job(tmp_path, "served", JOBTRACE_URL=server.url)
    finally:
        server.stop()
    _assert_crunch_profile(store_url, "served")


# -- compactness -------------------------------------------------------------------------------

HOUR = 3600
TICKS_PER_SECOND = 10


def _at_depth(depth: int, then: Callable[[], None]) -> None:
    if depth:
        _at_depth(depth - 1, then)
    else:
        then()


def _stage_a(then: Callable[[], None]) -> None:
    _at_depth(3, then)


def _stage_b(then: Callable[[], None]) -> None:
    _at_depth(6, then)


def _stage_c(then: Callable[[], None]) -> None:
    _at_depth(9, then)


def test_an_hour_long_jobs_profile_stays_well_under_a_megabyte(tmp_path: Path) -> None:
    """An hour of sampling (simulated clock, real frames from a dozen call paths) stores a
    few hundred small records that add up to the hour."""
    records: list[Any] = []
    clock = [1000.0]
    session = ProfileSession(
        "long-job",
        TICKS_PER_SECOND,
        clock=lambda: clock[0],
        wall_clock=lambda: 1.7e9 + clock[0],
        record=records.append,
    )
    session.begin(thread=False)
    stages = (_stage_a, _stage_b, _stage_c)
    for second in range(HOUR):
        for tick in range(TICKS_PER_SECOND):
            clock[0] += 1.0 / TICKS_PER_SECOND
            stage = stages[(second + tick) % 3]
            _at_depth((second // 60 + tick) % 4, functools.partial(stage, session.tick))
    session.finish()

    url = f"sqlite:///{tmp_path / 'long.db'}"
    sink = open_sink(url)
    try:
        write_batch(sink, records, None)
    finally:
        sink.close()
    with Store(url) as store, store.engine.connect() as conn:
        count, stored_bytes = conn.execute(
            sa.text(
                "SELECT COUNT(*), SUM(LENGTH(id) + LENGTH(job_id) + LENGTH(type) + "
                "LENGTH(format) + LENGTH(data) + 8) FROM profiles"
            )
        ).one()
    # Every flush interval at first, then at most every 10 s: a few hundred records.
    assert count < 1200, count
    assert stored_bytes < 1_000_000, stored_bytes
    profile = stored_profile(url, "long-job")
    # (This thread's stacks: a test runner may have threads of its own, idle all along.)
    this_test = weight(profile.wall, "test_an_hour_long_jobs_profile_stays_well_under")
    assert this_test / 1e6 == pytest.approx(HOUR, rel=0.01)
    for stage in ("_stage_a (", "_stage_b (", "_stage_c ("):
        assert weight(profile.wall, stage) / 1e6 == pytest.approx(HOUR / 3, rel=0.05)
    (points,) = profile.timeline.values()
    # Ten a second for 10 s, twice a second to a minute, then once a second.
    assert len(points) == pytest.approx(100 + 100 + (HOUR - 60), rel=0.05)


def test_the_sampler_never_breaks_the_program_when_a_frame_is_odd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing tick is logged and the sampler goes on; the program does not see it."""
    records: list[Any] = []
    session = ProfileSession("odd", 100, record=records.append)
    session.begin(thread=False)

    def broken() -> dict[int, Any]:
        raise RuntimeError("frames unavailable")

    monkeypatch.setattr(sys, "_current_frames", broken)
    session.finish()  # logs instead of raising
    assert not session.running
