"""The recorder: buffering, batching, drops, spooling and replay, fork safety, exit flush."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import orjson
import pytest

from jobtrace import _config
from jobtrace.model import Record
from jobtrace.recorder import Recorder, get_recorder
from jobtrace.sinks import register_sink
from jobtrace.sinks.memory import MemorySink


def metric(step: int, job: str = "job") -> Record:
    return ("metric", job, "loss", step, 0.5, 1.0)


def make_recorder(url: str, directory: Path, **kwargs: object) -> Recorder:
    settings = _config.resolve(
        url=url, directory=str(directory), install_signal_handlers=False, **kwargs
    )  # type: ignore[arg-type]
    return Recorder(settings)


def test_records_reach_the_sink_on_flush(memory_sink: MemorySink) -> None:
    recorder = get_recorder()
    for step in range(1000):
        recorder.record(metric(step))
    assert recorder.flush()
    assert [r[3] for r in memory_sink.records] == list(range(1000))


def test_large_buffers_are_written_in_batches(tmp_path: Path) -> None:
    recorder = make_recorder("memory://batches", tmp_path, buffer_size=100_000)
    recorder._batch_size = 300
    for step in range(1000):
        recorder.record(metric(step))
    recorder.flush()
    sink = MemorySink.named("batches")
    assert len(sink.records) == 1000
    assert max(sink.batches) <= 300


class BlockingSink:
    """Blocks inside write() until released, so a test can fill the buffer meanwhile."""

    entered = threading.Event()
    release = threading.Event()
    written: typing.ClassVar[list[Record]] = []

    def __init__(self, url: str) -> None:
        pass

    def write(self, records: Sequence[Record]) -> None:
        BlockingSink.entered.set()
        BlockingSink.release.wait(30)
        BlockingSink.written.extend(records)

    def close(self) -> None:
        pass


def test_a_full_buffer_spills_to_the_spool_and_loses_nothing_or_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "jobtrace")
    register_sink("blocking", f"{__name__}:BlockingSink")
    BlockingSink.entered.clear()
    BlockingSink.release.clear()
    BlockingSink.written = []
    recorder = make_recorder("blocking://", tmp_path, buffer_size=10)
    for step in range(5):  # reaches the high-water mark (5) and wakes the writer
        recorder.record(metric(step))
    assert BlockingSink.entered.wait(10)
    for step in range(5, 25):  # 10 fit in the buffer, the oldest spill to disk
        recorder.record(metric(step))
    assert recorder.spilled == 10
    BlockingSink.release.set()
    assert recorder.flush(timeout=None)
    assert recorder.dropped == 0
    assert [r[3] for r in BlockingSink.written] == list(range(25))
    assert recorder.spool.pending() == [] and recorder._backlog.files == []
    assert sum("spilling" in r.getMessage() for r in caplog.records) == 1
    recorder.close()


def test_a_failing_sink_spools_and_a_later_flush_replays(tmp_path: Path) -> None:
    sink = MemorySink.named("flaky")
    sink.fail_with = ConnectionError("store down")
    recorder = make_recorder("memory://flaky", tmp_path)
    for step in range(100):
        recorder.record(metric(step))
    recorder.flush()
    assert sink.records == []
    assert recorder.spooled == 100
    assert len(recorder._backlog.files) == 1  # one file, this process's until it closes

    sink.fail_with = None
    recorder.record(metric(100))
    recorder.flush()
    assert sorted(r[3] for r in sink.records) == list(range(101))
    assert recorder.spool.files() == []
    assert recorder.replayed == 100


def test_the_next_process_replays_what_a_previous_one_spooled(tmp_path: Path) -> None:
    sink = MemorySink.named("later")
    sink.fail_with = OSError("disk on fire")
    first = make_recorder("memory://later", tmp_path)
    first.record(metric(1))
    first.flush()
    first.close()  # its spooled files are anyone's now
    sink.fail_with = None
    assert sink.records == []

    second = make_recorder("memory://later", tmp_path)
    second.flush()  # nothing new recorded, but the first flush picks up the spool
    assert [r[3] for r in sink.records] == [1]


def test_spooling_is_per_url(tmp_path: Path) -> None:
    MemorySink.named("a").fail_with = OSError("down")
    a = make_recorder("memory://a", tmp_path)
    a.record(metric(1))
    a.flush()
    b = make_recorder("memory://b", tmp_path)
    b.flush()
    assert MemorySink.named("b").records == []


def test_a_sink_that_cannot_even_open_is_spooled_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    recorder = make_recorder(f"sqlite:///{blocker}/store.db", tmp_path)
    recorder.record(metric(1))
    assert recorder.flush() is True
    assert recorder.spooled == 1


def test_disabled_recording_records_nothing(tmp_path: Path) -> None:
    recorder = make_recorder("memory://off", tmp_path, enabled=False)
    recorder.record(metric(1))
    recorder.flush()
    assert MemorySink.named("off").records == []


def test_records_are_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    code = (
        "import jobtrace, jobtrace.recorder as r\n"
        f"jobtrace.configure('file://{out}')\n"
        "for i in range(500): r.record(('metric', 'j', 'x', i, 1.0, 2.0))\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "JOBTRACE_DIR": str(tmp_path)}
    )
    steps = [orjson.loads(line)["step"] for line in out.read_bytes().splitlines()]
    assert steps == list(range(500))


def test_a_forked_child_writes_only_its_own_records(tmp_path: Path) -> None:
    out = tmp_path / "fork.jsonl"
    code = f"""
import os, jobtrace, jobtrace.recorder as r
jobtrace.configure('file://{out}', flush_interval=60)
r.record(('metric', 'parent', 'x', 1, 1.0, 2.0))   # still buffered at the fork
pid = os.fork()
if pid == 0:
    r.record(('metric', 'child', 'x', 2, 1.0, 2.0))
    r.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={**os.environ, "JOBTRACE_DIR": str(tmp_path)}
    )
    jobs = sorted(orjson.loads(line)["job_id"] for line in out.read_bytes().splitlines())
    assert jobs == ["child", "parent"]


def test_multiprocessing_fork_workers_flush_when_they_exit(tmp_path: Path) -> None:
    out = tmp_path / "pool.jsonl"
    code = f"""
import multiprocessing as mp, jobtrace, jobtrace.recorder as r
def work(i):
    r.record(('metric', 'job', 'x', i, 1.0, 2.0))
    return i
if __name__ == '__main__':
    jobtrace.configure('file://{out}', flush_interval=60)
    with mp.get_context('fork').Pool(3) as pool:
        assert pool.map(work, range(30)) == list(range(30))
        pool.close()
        pool.join()
"""
    script = tmp_path / "pool_script.py"
    script.write_text(code)
    subprocess.run(
        [sys.executable, str(script)], check=True, env={**os.environ, "JOBTRACE_DIR": str(tmp_path)}
    )
    steps = sorted(orjson.loads(line)["step"] for line in out.read_bytes().splitlines())
    assert steps == list(range(30))


class _IdSink:
    """A deduplicating sink whose first write stores the batch and then fails, as when a
    server commits a batch but its response is lost."""

    accepts_batch_id = True
    stored: ClassVar[dict[str, list[Record]]] = {}
    calls: ClassVar[list[str | None]] = []
    lose_next_response: ClassVar[bool] = True

    def __init__(self, url: str) -> None:
        pass

    def write(self, records: Sequence[Record], batch_id: str | None = None) -> None:
        assert batch_id is not None
        _IdSink.calls.append(batch_id)
        _IdSink.stored.setdefault(batch_id, list(records))
        if _IdSink.lose_next_response:
            _IdSink.lose_next_response = False
            raise ConnectionError("response lost")

    def close(self) -> None:
        pass


def test_a_spooled_batch_keeps_its_id_so_a_replay_is_not_stored_twice() -> None:
    register_sink("idtest", f"{__name__}:_IdSink")
    _config.configure(url="idtest://x", install_signal_handlers=False)
    recorder = get_recorder()
    recorder.record(("metric", "j", "loss", 0, 1.0, 1.0))
    recorder.record(("metric", "j", "loss", 1, 2.0, 2.0))
    assert recorder.flush(timeout=10)  # stored, but the sink raised: spooled
    assert recorder.flush(timeout=10)  # replayed under the same id
    first, replay = _IdSink.calls
    assert first == replay
    assert list(_IdSink.stored) == [first] and len(_IdSink.stored[first]) == 2


def test_a_bound_method_ticker_and_listener_can_be_removed() -> None:
    class Watcher:
        def tick(self, now: float) -> None:
            pass

        def on_terminate(self, signum: int, fatal: bool) -> None:
            pass

    recorder = get_recorder()
    watcher = Watcher()
    before = (recorder._tickers, recorder._terminate_listeners)
    recorder.add_ticker(watcher.tick)
    recorder.add_terminate_listener(watcher.on_terminate)
    # A fresh bound method each time: removal must go by equality, not identity.
    recorder.remove_ticker(watcher.tick)
    recorder.remove_terminate_listener(watcher.on_terminate)
    assert (recorder._tickers, recorder._terminate_listeners) == before


def test_a_big_spool_file_replays_in_parts_whose_ids_do_not_depend_on_the_batch_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobtrace import spool as spool_module

    monkeypatch.setattr(spool_module, "REPLAY_PART", 20)
    register_sink("idtest", f"{__name__}:_IdSink")
    records = [("metric", "j", "loss", i, 1.0, 1.0) for i in range(50)]
    parts = {}
    for batch_size in (7, 1000):  # a replay before and after a change of batch size
        _IdSink.stored, _IdSink.calls, _IdSink.lose_next_response = {}, [], False
        _config.configure(url="idtest://x", install_signal_handlers=False)
        recorder = get_recorder()
        recorder._batch_size = batch_size
        recorder._spool.write(records, "B")
        recorder._spool_checked = False
        assert recorder.flush(timeout=10)
        parts[batch_size] = dict(_IdSink.stored)
    # Same ids for the same records, however the recorder is configured: a deduplicating
    # sink can never acknowledge a part it did not store.
    assert parts[7] == parts[1000]
    assert sorted(parts[7]) == ["B:0", "B:20", "B:40"]
    assert [r[3] for r in parts[7]["B:40"]] == list(range(40, 50))


def test_a_flush_behind_a_hung_sink_returns_at_its_timeout_with_everything_on_disk(
    tmp_path: Path,
) -> None:
    register_sink("blocking", f"{__name__}:BlockingSink")
    BlockingSink.entered.clear()
    BlockingSink.release.clear()
    BlockingSink.written = []
    recorder = make_recorder("blocking://", tmp_path, buffer_size=1000)
    recorder._batch_size = 100
    for step in range(100):  # one batch: the writer takes it and hangs in write()
        recorder.record(metric(step))
    assert BlockingSink.entered.wait(10)
    for step in range(100, 300):
        recorder.record(metric(step))
    assert recorder.flush(timeout=0.2) is False  # bounded: the writer is still stuck
    on_disk = sorted(r[3] for f in recorder.spool.files() for r in recorder.spool.read(f.path))
    # The batch stuck in the sink write is on disk too (a copy), with everything after it.
    assert on_disk == list(range(300))
    BlockingSink.release.set()
    assert recorder.flush(timeout=None)
    assert sorted({r[3] for r in BlockingSink.written}) == list(range(300))
    assert recorder.spool.files() == []
    recorder.close()
