"""BatchMetrics in bounded memory: streaming aggregates, a sketched median past the in-memory
window, and file rows read back from the sink (streamed) for any batch size."""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

import jobtrace
from jobtrace import _config
from jobtrace.batch import BatchMetrics, stored_summary
from jobtrace.batch.stored import stored_file_metrics
from jobtrace.batch.summary import OTHER_ERROR_TYPES
from jobtrace.batch.tracker import write_json_export
from jobtrace.errors import ConfigurationError, StoreError
from jobtrace.model import ITEM
from jobtrace.sinks.memory import MemorySink
from tests.counting_sink import rss_kb, use_counting_sink


def record_mix(metrics: BatchMetrics, n: int, seed: int = 3) -> list[float]:
    """Successes with log-normal durations, 4 % errors of three types, 2 % skips; returns
    the timed durations."""
    rng = random.Random(seed)
    timed = []
    for i in range(n):
        if i % 25 == 1:
            kind = ("ValueError", "OSError", "KeyError")[i % 3]
            metrics.record_error(f"f/{i}", kind, "broken", duration=rng.random())
        elif i % 50 == 2:
            metrics.record_skip(f"f/{i}", "empty")
        else:
            duration = rng.lognormvariate(-2.0, 1.5)
            timed.append(duration)
            metrics.record_file(
                f"f/{i}", duration=duration, samples=i % 1000, measurements=i % 7, nbytes=i
            )
    return timed


def test_a_million_files_keep_memory_flat() -> None:
    # Before: every record tuple stayed in a list for summary(): this loop grew RSS by
    # 241 MiB after the warm-up. Now the growth is the allocator's noise (< 0.1 MiB).
    sink = use_counting_sink("batch-rss", buffer_size=50_000)
    metrics = BatchMetrics()
    metrics.start()
    names = [f"data/{i % 1000:04d}.wfm" for i in range(5000)]

    def record(rounds: int) -> None:
        for _ in range(rounds):
            for name in names:
                metrics.record_file(name, duration=0.25, samples=10)
            jobtrace.flush()  # the writer keeps up: nothing is dropped, no buffer grows

    record(20)  # warm-up: 100,000 files, past the in-memory window
    before = rss_kb()
    record(180)  # 900,000 more
    growth_mib = (rss_kb() - before) / 1024
    metrics.finish()
    jobtrace.flush()
    assert growth_mib < 16, f"RSS grew {growth_mib:.1f} MiB over 900,000 files"
    summary = metrics.summary()
    assert summary.total_files == summary.processed_count == 1_000_000
    assert sink.counts[ITEM] == 1_000_000


def test_past_the_window_every_figure_but_the_median_is_exact() -> None:
    metrics = BatchMetrics(keep_in_memory=1000)
    timed = record_mix(metrics, 60_000)
    data = metrics.summary()
    assert (data.total_files, data.processed_count) == (60_000, len(timed))
    assert (data.error_count, data.skip_count) == (2400, 1200)
    assert data.errors.by_type == {"KeyError": 800, "OSError": 800, "ValueError": 800}
    timing = data.timing
    assert timing.min_per_file == min(timed) and timing.max_per_file == max(timed)
    assert timing.total_duration == pytest.approx(math.fsum(timed), rel=1e-14)
    assert timing.average_per_file == pytest.approx(statistics.fmean(timed), rel=1e-14)
    assert timing.stddev_per_file == pytest.approx(statistics.stdev(timed), rel=1e-12)
    exact = statistics.median(timed)
    assert abs(timing.median_per_file - exact) <= 0.005 * exact
    assert data.throughput.samples_per_second == pytest.approx(
        sum(i % 1000 for i in range(60_000) if i % 25 != 1 and i % 50 != 2) / math.fsum(timed)
    )


def test_within_the_window_the_median_is_exact() -> None:
    metrics = BatchMetrics(keep_in_memory=10_000)
    timed = record_mix(metrics, 9_000)
    assert metrics.summary().timing.median_per_file == statistics.median(timed)


def test_the_store_gives_the_exact_median_of_a_large_batch(store_url: str) -> None:
    _config.configure(url=store_url, install_signal_handlers=False)
    with BatchMetrics(keep_in_memory=100) as metrics:
        timed = record_mix(metrics, 6000)
    stored = stored_summary(metrics.batch_id, url=store_url)
    assert stored is not None
    assert stored.timing.median_per_file == statistics.median(timed)
    in_memory = metrics.summary()
    assert stored.timing.stddev_per_file == pytest.approx(
        in_memory.timing.stddev_per_file, rel=1e-12
    )
    assert stored.errors == in_memory.errors and stored.total_files == in_memory.total_files


def test_error_types_beyond_the_cap_are_counted_together() -> None:
    metrics = BatchMetrics()
    for i in range(1500):
        metrics.record_error(f"f{i}", f"Error{i:04d}", "x")
    by_type = metrics.summary().errors.by_type
    assert len(by_type) == 1001 and by_type[OTHER_ERROR_TYPES] == 500
    assert sum(by_type.values()) == metrics.summary().error_count == 1500


def test_past_the_window_file_rows_come_back_from_the_store(store_url: str) -> None:
    _config.configure(url=store_url, install_signal_handlers=False)
    small = BatchMetrics(keep_in_memory=100)
    record_mix(small, 3000)
    rows = small.get_file_metrics()  # read back: 3000 > 100
    assert [r["filename"] for r in rows] == [f"f/{i}" for i in range(3000)]
    # The same rows as the in-memory path gives for the same records.
    with_window = BatchMetrics(keep_in_memory=10_000)
    record_mix(with_window, 3000)
    from_memory = with_window.get_file_metrics()
    from_store = list(stored_file_metrics(with_window.batch_id, 3000, 0))
    assert from_store == from_memory


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_past_the_window_rows_come_back_from_a_memory_or_file_sink(
    scheme: str, tmp_path: Path
) -> None:
    url = "memory://readback" if scheme == "memory" else f"file://{tmp_path / 'records.jsonl'}"
    _config.configure(url=url, install_signal_handlers=False)
    metrics = BatchMetrics(keep_in_memory=10)
    other = BatchMetrics(keep_in_memory=10)  # its items must not be mixed in
    for i in range(50):
        metrics.record_file(f"a{i}", duration=0.5, samples=i, memory_peak=4096)
        other.record_file(f"b{i}", duration=0.5)
    rows = metrics.get_file_metrics()
    assert [r["filename"] for r in rows] == [f"a{i}" for i in range(50)]
    assert rows[7]["samples"] == 7 and rows[7]["memory_peak_bytes"] == 4096


def test_exports_past_the_window_stream_every_file(store_url: str, tmp_path: Path) -> None:
    _config.configure(url=store_url, install_signal_handlers=False)
    with BatchMetrics(keep_in_memory=50) as metrics:
        record_mix(metrics, 2500)
    metrics.export_json(tmp_path / "m.json")
    metrics.export_csv(tmp_path / "m.csv")
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["summary"] == metrics.summary().to_dict()
    assert data["files"] == metrics.get_file_metrics() and len(data["files"]) == 2500
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 2501


@pytest.mark.parametrize("files", [0, 1, 2500])
def test_the_streamed_json_export_is_byte_for_byte_orjsons(files: int) -> None:
    rows = [{"filename": f"f{i}", "n": i, "nested": {"a": [1, 2]}} for i in range(files)]
    summary = {"batch_id": "b", "timing": {"x": 1.5}, "errors": {"by_type": {}}}
    chunks: list[bytes] = []

    class Out:
        def write(self, data: bytes) -> None:
            chunks.append(data)

    write_json_export(summary, iter(rows), Out())  # type: ignore[arg-type]
    expected = orjson.dumps({"summary": summary, "files": rows}, option=orjson.OPT_INDENT_2)
    assert b"".join(chunks) == expected + b"\n"


def test_rows_past_the_window_through_a_server_raise_a_clear_error(tmp_path: Path) -> None:
    _config.configure(url="memory://pre", install_signal_handlers=False)
    metrics = BatchMetrics(keep_in_memory=5)
    for i in range(10):
        metrics.record_file(f"f{i}", duration=0.1)
    _config.configure(url="http://127.0.0.1:9", install_signal_handlers=False)
    with pytest.raises(StoreError, match=r"more than the 5 kept in memory.*cannot hand them back"):
        metrics.get_file_metrics()
    with pytest.raises(StoreError, match="jobtrace batch items"):
        metrics.export_csv(tmp_path / "m.csv")
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    _config.configure(url="memory://post", install_signal_handlers=False)


def test_rows_past_the_window_with_recording_off_raise_a_clear_error() -> None:
    _config.configure(url="memory://off", enabled=False, install_signal_handlers=False)
    metrics = BatchMetrics(keep_in_memory=2)
    for i in range(3):
        metrics.record_file(f"f{i}", duration=0.1)
    with pytest.raises(StoreError, match="recording is off"):
        metrics.get_file_metrics()
    assert metrics.summary().total_files == 3


def test_rows_the_store_does_not_hold_yet_are_not_exported_short(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="jobtrace.recorder")
    _config.configure(url="memory://down", install_signal_handlers=False)
    MemorySink.named("down").fail_with = ConnectionError("store down")
    metrics = BatchMetrics(keep_in_memory=2)
    for i in range(5):
        metrics.record_file(f"f{i}", duration=0.1)
    with pytest.raises(StoreError, match="holds only 0 of them"):
        metrics.get_file_metrics()
    MemorySink.named("down").fail_with = None
    jobtrace.flush()
    assert len(metrics.get_file_metrics()) == 5


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_keep_in_memory_must_be_a_count(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="keep_in_memory"):
        BatchMetrics(keep_in_memory=bad)


def test_a_window_of_zero_reads_every_row_back() -> None:
    sink_name = "zero"
    _config.configure(url=f"memory://{sink_name}", install_signal_handlers=False)
    metrics = BatchMetrics(keep_in_memory=0)
    metrics.record_file("only", duration=1.0)
    assert [r["filename"] for r in metrics.get_file_metrics()] == ["only"]
    assert metrics.summary().timing.median_per_file == 1.0


def test_threads_recording_past_the_window_lose_nothing_in_the_fold() -> None:
    # Folding pops from the pending queue while other threads append to it: every file
    # must land in the aggregates exactly once.
    sink = use_counting_sink("batch-threads")
    metrics = BatchMetrics(keep_in_memory=1000)
    threads, per_thread = 8, 20_000
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            if i % 1000 == 0:
                metrics.record_error(f"{t}/{i}", f"E{t}", "x")
            else:
                metrics.record_file(f"{t}/{i}", duration=0.001 * (t + 1), samples=1)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    jobtrace.flush()
    summary = metrics.summary()
    assert summary.total_files == sink.counts[ITEM] == threads * per_thread
    assert summary.error_count == threads * per_thread // 1000
    assert summary.errors.by_type == {f"E{t}": per_thread // 1000 for t in range(threads)}
    timed = [0.001 * (t + 1) for t in range(threads) for _ in range(per_thread - 20)]
    assert summary.timing.total_duration == pytest.approx(math.fsum(timed), rel=1e-12)
    assert summary.timing.stddev_per_file == pytest.approx(statistics.stdev(timed), rel=1e-9)
