"""Nothing lost while the disk has room: producers far faster than the writer, a full disk,
the spool cap, and a sink too slow for the exit flush — each counting sent vs stored."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from jobtrace import _config
from jobtrace.recorder import get_recorder
from jobtrace.sinks import register_sink
from jobtrace.store import Store, schema
from tests.cli_helpers import cli_env, jobtrace_cli
from tests.lossless_helpers import ENV_DELAY, KINDS, produce, stored
from tests.server_helpers import ServeProcess, thread_server

#: The issue's acceptance figures: a million records of each kind, 20x the buffer.
MILLION = 1_000_000
BUFFER = 50_000


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", KINDS)
def test_a_million_records_from_a_tight_loop_are_all_stored(kind: str, store_url: str) -> None:
    _config.configure(url=store_url, buffer_size=BUFFER, install_signal_handlers=False)
    recorder = get_recorder()
    spilled, dropped = recorder.spilled, recorder.dropped
    job = produce(kind, MILLION)
    assert recorder.spilled > spilled  # the loop outran the writer: this tests spilling
    assert recorder.flush(timeout=None)
    assert recorder.dropped == dropped, recorder.dropped_by_kind
    assert stored(store_url, kind, job.id) == MILLION
    row = Store(store_url).get_job(job.id)
    assert row is not None
    assert (row["status"], row["records_dropped"]) == ("succeeded", None)
    assert job.result is not None and job.result.records_dropped is None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A real `jobtrace serve` on a SQLite store: (server URL, store URL)."""
    directory = tmp_path_factory.mktemp("lossless-server")
    store_url = f"sqlite:///{directory / 'server.db'}"
    serve = ServeProcess(store_url, directory)
    serve.start()
    try:
        yield serve.url, store_url
    finally:
        serve.stop()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", KINDS)
def test_a_million_records_through_a_server_are_all_stored(
    kind: str, server: tuple[str, str]
) -> None:
    server_url, store_url = server
    _config.configure(url=server_url, buffer_size=BUFFER, install_signal_handlers=False)
    recorder = get_recorder()
    dropped = recorder.dropped
    job = produce(kind, MILLION)
    assert recorder.flush(timeout=None)
    assert recorder.dropped == dropped, recorder.dropped_by_kind
    assert stored(store_url, kind, job.id) == MILLION
    row = Store(store_url).get_job(job.id)
    assert row is not None
    assert (row["status"], row["records_dropped"]) == ("succeeded", None)


# -- a full disk, the cap -------------------------------------------------------------------

DISK_FULL_CHILD = """
import json, resource, signal, sys
import jobtrace
from jobtrace.recorder import get_recorder

url, directory, fsize, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if fsize:  # no tmpfs: every file this process writes is capped instead
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
jobtrace.configure(url, directory=directory, buffer_size=5_000, install_signal_handlers=False)
with jobtrace.job("disk-full", job_id="disk-full") as job:
    for step in range(n):
        jobtrace.log_metric("loss", 0.5, step)
        with jobtrace.Trace("step"):
            pass
recorder = get_recorder()
recorder.flush()
print(json.dumps({"dropped": recorder.dropped_by_kind, "result": job.result.records_dropped}))
"""


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: int) -> Iterator[int]:
    """A ``size``-byte tmpfs at ``path`` (yields 0), or, where mounting is not permitted,
    nothing mounted and the file size limit a child should set on itself instead."""
    path.mkdir(parents=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield 0 if mounted else size // 8
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.timeout(300)
def test_a_full_disk_drops_count_per_kind_show_on_the_job_and_what_fit_is_replayed(
    tmp_path: Path,
) -> None:
    # The store is down (its directory is a file) while the job runs: everything goes to a
    # spool on a 3 MiB filesystem, far too small for 150,000 metric points and spans.
    blocker = tmp_path / "store"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/store.db"
    sent = 150_000
    with tiny_filesystem(tmp_path / "tiny", 3 << 20) as fsize:
        tiny = str(tmp_path / "tiny")
        child = subprocess.run(
            [sys.executable, "-c", DISK_FULL_CHILD, url, tiny, str(fsize), str(sent)],
            # No profile: its records would be dropped (and counted) too, and this test
            # counts exactly what it sent.
            env=cli_env(tmp_path / "tiny", JOBTRACE_PROFILE="0"),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        assert "Traceback" not in child.stderr, child.stderr[-3000:]
        report = json.loads(child.stdout)
        dropped = report["dropped"]
        # The job's profile records, sent as it ends, may find the disk full too.
        assert {"metric", "span"} <= set(dropped) <= {"metric", "span", "profile"}, report
        assert report["result"] is not None  # the job's result already knew at its end

        # The store comes back; a later process on the same URL replays what fit.
        blocker.unlink()
        blocker.mkdir()
        _config.configure(url=url, directory=tmp_path / "tiny", install_signal_handlers=False)
        assert get_recorder().flush(timeout=None)
    for kind in ("metric", "span"):
        assert stored(url, kind, "disk-full") + dropped[kind] == sent
    row = Store(url).get_job("disk-full")
    assert row is not None
    assert row["status"] == "succeeded"
    assert row["records_dropped"] == dropped


def test_past_the_spool_cap_drops_are_counted_and_reported_on_the_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _config.configure(
        url=url, buffer_size=1_000, spool_max_bytes=100_000, install_signal_handlers=False
    )
    recorder = get_recorder()
    sent = 20_000
    with recorder._locked(None):  # the writer is stuck: every record past 1,000 spills
        job = produce("metric", sent, job_id="capped")
    assert recorder.flush(timeout=None)
    dropped = recorder.records_dropped("capped")
    assert dropped is not None and dropped["metric"] > 0
    assert stored(url, "metric", "capped") + dropped["metric"] == sent
    assert job.result is not None and job.result.records_dropped == dropped
    assert f"LOST {dropped['metric']} records" in str(job.result)
    report = json.loads((Path(job.report_dir or "") / "report.json").read_text())
    assert report["records_dropped"] == dropped
    row = Store(url).get_job("capped")
    assert row is not None and row["records_dropped"] == dropped
    shown = jobtrace_cli("jobs", "show", "capped", "--store", url, cwd=tmp_path, check=True)
    assert f"metric: {dropped['metric']}" in shown.stdout
    with thread_server(url) as server_url:
        body = httpx.get(f"{server_url}/api/v1/jobs/capped").json()
    assert body["recordsDropped"] == dropped


def test_a_later_value_is_never_overwritten_by_an_older_spilled_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _config.configure(url=url, buffer_size=100, install_signal_handlers=False)
    recorder = get_recorder()
    with recorder._locked(None):  # most of these spill; the newest stay in memory
        for value in range(1000):
            recorder.record(("metric", "order", "loss", 0, float(value), 1.0))
    assert recorder.spilled > 0
    assert recorder.flush(timeout=None)
    store = Store(url)
    with store.engine.connect() as conn:
        value = conn.execute(sa.select(schema.metrics.c.value)).scalar_one()
    assert value == 999.0


def test_below_the_spool_cap_nothing_is_dropped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _config.configure(
        url=url, buffer_size=1_000, spool_max_bytes=10_000_000, install_signal_handlers=False
    )
    recorder = get_recorder()
    with recorder._locked(None):
        job = produce("metric", 20_000, job_id="roomy")
    assert recorder.spilled > 0
    assert recorder.flush(timeout=None)
    assert recorder.records_dropped("roomy") is None
    assert stored(url, "metric", "roomy") == 20_000
    row = Store(url).get_job("roomy")
    assert row is not None and row["records_dropped"] is None
    assert job.result is not None and job.result.records_dropped is None


# -- a sink too slow (or hung) for the exit flush --------------------------------------------

SLOW_CHILD = """
import os, signal, sys, time
import jobtrace
from jobtrace.sinks import register_sink

register_sink("slow", "tests.lossless_helpers:SlowSink")
url, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jobtrace.configure(url, flush_timeout=2)
with jobtrace.job("slow", job_id="slow"):
    for step in range(n):
        jobtrace.log_metric("loss", 0.5, step)
    if mode == "sigterm":
        print("ready", flush=True)
        time.sleep(120)  # SIGTERM arrives here
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("mode", "delay"), [("exit", "1"), ("exit", "3600"), ("sigterm", "1"), ("sigterm", "3600")]
)
def test_what_a_slow_or_hung_sink_did_not_take_at_exit_is_spooled_and_stored_later(
    tmp_path: Path, mode: str, delay: str
) -> None:
    url = f"slow:///{tmp_path / 'store.db'}"
    # At a second a batch of 20,000, more than the job's end (which waits up to 5 s for
    # its report's profile) and the exit flush (2 s here) together can deliver.
    sent = 400_000
    env = cli_env(tmp_path / "jt", **{ENV_DELAY: delay, "PYTHONPATH": _pythonpath()})
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, url, str(sent), mode],
        env=env,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if mode == "sigterm":
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == (-signal.SIGTERM if mode == "sigterm" else 0), err[-3000:]
    assert "stays in the spool" in err or mode == "sigterm", err[-3000:]

    # A later process on the same URL (with a sink that keeps up) stores the rest.
    register_sink("slow", "tests.lossless_helpers:SlowSink")
    os.environ[ENV_DELAY] = "0"
    try:
        _config.configure(url=url, directory=tmp_path / "jt", install_signal_handlers=False)
        assert get_recorder().flush(timeout=None)
    finally:
        del os.environ[ENV_DELAY]
    store_url = "sqlite://" + url.split("://", 1)[1]
    assert stored(store_url, "metric", "slow") == sent
    row = Store(store_url).get_job("slow")
    assert row is not None
    assert row["status"] == ("killed" if mode == "sigterm" else "succeeded")


def _pythonpath() -> str:
    root = Path(__file__).parent.parent
    return os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])
