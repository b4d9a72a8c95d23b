"""BatchMetrics: TraceKit's API and summary, persisted items, bad input, exports, threads."""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import statistics
import threading
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import _config
from jobtrace.batch import BatchMetrics, ExportError, stored_summary
from jobtrace.errors import ConfigurationError
from jobtrace.model import FIELDS, ITEM
from jobtrace.sinks.memory import MemorySink

SUMMARY_KEYS = {
    "batch_id",
    "total_files",
    "processed_count",
    "error_count",
    "skip_count",
    "success_rate_percent",
    "timing",
    "throughput",
    "errors",
    "start_time",
    "end_time",
}


def use_store(url: str) -> None:
    _config.configure(url=url, install_signal_handlers=False)


def fill(metrics: BatchMetrics, seed: int = 7, files: int = 300) -> list[float]:
    """Record a mix of successes (random durations), errors and skips; return the timed
    durations TraceKit's figures are computed over."""
    rng = random.Random(seed)
    timed = []
    for i in range(files):
        if i % 10 == 3:
            kind = "KeyError" if i % 20 == 3 else "ValueError"
            metrics.record_error(f"in/{i}.dat", kind, f"bad record {i}", duration=rng.random())
        elif i % 25 == 4:
            metrics.record_skip(f"in/{i}.dat", "empty")
        else:
            duration = rng.random() * 2
            timed.append(duration)
            metrics.record_file(
                f"in/{i}.dat",
                duration=duration,
                samples=rng.randrange(10_000),
                measurements=rng.randrange(50),
                nbytes=rng.randrange(1 << 20),
                memory_peak=rng.randrange(1 << 30),
            )
    return timed


def test_summary_has_tracekits_fields_and_statistics() -> None:
    metrics = BatchMetrics()
    timed = fill(metrics)
    data = metrics.summary().to_dict()
    assert set(data) == SUMMARY_KEYS
    assert (data["total_files"], data["processed_count"]) == (300, len(timed))
    assert data["error_count"] == 30 and data["skip_count"] == 12
    by_type = {"ValueError": 15, "KeyError": 15}
    assert data["errors"] == {"by_type": by_type, "total": 30, "rate_percent": 10.0}
    timing = data["timing"]
    assert timing["average_per_file_seconds"] == round(statistics.mean(timed), 3)
    assert timing["median_per_file_seconds"] == round(statistics.median(timed), 3)
    assert timing["stddev_per_file_seconds"] == round(statistics.stdev(timed), 3)
    assert timing["min_per_file_seconds"] == round(min(timed), 3)
    assert timing["max_per_file_seconds"] == round(max(timed), 3)
    # Never started: TraceKit takes the sum of the timed durations as the total.
    assert timing["total_duration_seconds"] == round(sum(timed), 3)
    assert data["start_time"] is None and data["end_time"] is None
    assert data["success_rate_percent"] == round(100 * len(timed) / 300, 2)


def test_every_file_is_an_item_record_of_the_batch_job(memory_sink: MemorySink) -> None:
    with BatchMetrics("scan-0042", name="scan") as metrics:
        metrics.record_file("a.wfm", duration=0.5, samples=100, memory_peak=2048)
        metrics.record_error("b.wfm", "ValueError", "bad header", duration=0.25)
        metrics.record_skip("c.wfm", "already done")
    jobtrace.flush()
    items = [dict(zip(FIELDS[ITEM], r[1:], strict=True)) for r in memory_sink.of_kind(ITEM)]
    assert [(i["job_id"], i["name"], i["status"]) for i in items] == [
        ("scan-0042", "a.wfm", "success"),
        ("scan-0042", "b.wfm", "error"),
        ("scan-0042", "c.wfm", "skipped"),
    ]
    assert items[0]["memory_peak_kb"] == 2.0 and items[0]["samples"] == 100
    assert (items[1]["error_type"], items[1]["error_message"]) == ("ValueError", "bad header")
    assert items[2]["error_message"] == "already done"
    assert len({i["id"] for i in items}) == 3
    job = metrics.job
    assert (job.id, job.name, job.status) == ("scan-0042", "scan", "succeeded")


def test_the_summary_from_the_store_equals_the_summary_in_memory(store_url: str) -> None:
    use_store(store_url)
    metrics = BatchMetrics()
    metrics.start()
    fill(metrics, files=500)
    metrics.finish()
    in_memory = metrics.summary()
    from_store = stored_summary(metrics.batch_id, url=store_url)
    assert from_store is not None
    assert from_store.to_dict() == in_memory.to_dict()
    # Beyond the rounding of to_dict: the same figures up to float summation order.
    pairs = [(from_store.timing, in_memory.timing), (from_store.throughput, in_memory.throughput)]
    for a, b in pairs:
        for name in a.__slots__:
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12)
    assert from_store.timing.median_per_file == in_memory.timing.median_per_file
    assert from_store.start_time == in_memory.start_time is not None


def test_an_empty_batch_summarises_to_zeros(store_url: str) -> None:
    use_store(store_url)
    with BatchMetrics() as metrics:
        pass
    data = metrics.summary().to_dict()
    assert data["total_files"] == 0 and data["success_rate_percent"] == 0
    assert data["errors"] == {"by_type": {}, "total": 0, "rate_percent": 0.0}
    assert data["throughput"]["files_per_second"] == 0.0
    per_file = {k: v for k, v in data["timing"].items() if k != "total_duration_seconds"}
    assert set(per_file.values()) == {0.0}
    stored = stored_summary(metrics.batch_id, url=store_url)
    assert stored is not None and stored.to_dict() == data


def test_an_unstarted_batch_is_found_in_the_store_by_its_items(store_url: str) -> None:
    use_store(store_url)
    metrics = BatchMetrics()
    metrics.record_file("x", duration=0.5)
    metrics.record_file("y", duration=1.5)
    stored = stored_summary(metrics.batch_id, url=store_url)
    assert stored is not None and stored.to_dict() == metrics.summary().to_dict()
    assert stored.timing.total_duration == 2.0
    assert stored_summary("no-such-batch", url=store_url) is None


def test_a_running_batch_reports_the_sum_of_durations_until_it_finishes() -> None:
    metrics = BatchMetrics()
    metrics.start()
    metrics.record_file("x", duration=0.75)
    assert metrics.summary().timing.total_duration == 0.75
    assert metrics.summary().start_time is not None
    metrics.finish()
    summary = metrics.summary()
    assert summary.end_time is not None
    assert summary.timing.total_duration == metrics.job.end_time - metrics.job.start_time  # type: ignore[operator]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("neg.dat",), {"duration": -0.1}),
        (("nan.dat",), {"duration": math.nan}),
        (("inf.dat",), {"duration": math.inf}),
        (("text.dat",), {"duration": "slow"}),
        (("status.dat",), {"duration": 1.0, "status": "done"}),
        ((42,), {"duration": 1.0}),
        ((None,), {"duration": 1.0}),
        (("samples.dat",), {"duration": 1.0, "samples": -5}),
        (("samples.dat",), {"duration": 1.0, "samples": 2.5}),
        (("flag.dat",), {"duration": 1.0, "measurements": True}),
        (("type.dat",), {"duration": 1.0, "status": "error", "error_type": ValueError}),
        (("peak.dat",), {"duration": 1.0, "memory_peak": -1}),
    ],
)
def test_bad_input_is_dropped_counted_and_logged_never_raised(
    args: tuple[Any, ...], kwargs: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    metrics = BatchMetrics()
    metrics.record_file("good.dat", duration=0.5)
    metrics.record_file(*args, **kwargs)
    metrics.record_file(*args, **kwargs)
    assert metrics.dropped == 2
    assert metrics.summary().total_files == 1
    warnings = [r for r in caplog.records if "dropped a file record" in r.getMessage()]
    assert len(warnings) == 1 and metrics.batch_id in warnings[0].getMessage()


def test_paths_bytes_ints_and_odd_text_are_accepted_as_they_mean(memory_sink: MemorySink) -> None:
    metrics = BatchMetrics()
    metrics.record_file(Path("dir/a.csv"), duration=1)
    metrics.record_file(b"raw\xffname", duration=0.5)
    metrics.record_file("nul\x00and\udcffsurrogate", duration=0.5)
    metrics.record_error("e.csv", "E" * 1000, "m" * 20_000)
    names = [f["filename"] for f in metrics.get_file_metrics()]
    assert names[:2] == ["dir/a.csv", "raw\\udcffname"]
    assert "\x00" not in names[2] and names[2].encode("utf-8")
    error = metrics.get_file_metrics()[3]
    assert len(error["error_type"]) == 256 and len(error["error_message"]) == 10_000
    assert metrics.dropped == 0


def test_file_metrics_have_tracekits_keys() -> None:
    metrics = BatchMetrics()
    metrics.record_file("a", duration=2.0, samples=100, memory_peak=4096, nbytes=7)
    (row,) = metrics.get_file_metrics()
    assert row["filename"] == "a" and row["duration_seconds"] == 2.0
    assert row["samples_per_second"] == 50.0 and row["memory_peak_bytes"] == 4096
    assert row["bytes"] == 7 and row["status"] == "success"
    assert row["start_time"] < row["end_time"]


def test_exports_write_json_and_csv(tmp_path: Path) -> None:
    metrics = BatchMetrics("export-me")
    fill(metrics, files=40)
    metrics.export_json(tmp_path / "m.json")
    metrics.export_csv(tmp_path / "m.csv")
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["summary"] == metrics.summary().to_dict()
    assert data["files"] == metrics.get_file_metrics()
    with (tmp_path / "m.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and rows[0]["filename"] == "in/0.dat"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]  # no temp files


def test_an_empty_batch_exports_a_csv_header(tmp_path: Path) -> None:
    BatchMetrics().export_csv(tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().startswith("filename,start_time,end_time,")


@pytest.mark.parametrize("where", ["missing/dir/m.json", "."])
def test_exporting_to_an_unwritable_path_raises_a_clear_error(tmp_path: Path, where: str) -> None:
    metrics = BatchMetrics()
    metrics.record_file("a", duration=1.0)
    target = tmp_path / where
    with pytest.raises(ExportError, match="cannot write batch metrics to") as info:
        metrics.export_json(target)
    assert str(target) in str(info.value)
    assert isinstance(info.value, OSError)
    metrics.record_file("b", duration=1.0)  # the batch goes on
    assert metrics.summary().total_files == 2


def test_a_failed_export_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.csv"
    target.write_text("previous\n")

    def disk_full(rows: Any, out: Any) -> None:
        out.write("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("jobtrace.batch.tracker.write_file_metrics_csv", disk_full)
    with pytest.raises(ExportError, match="No space left on device"):
        BatchMetrics().export_csv(target)
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_two_threads_exporting_to_one_path_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both writers are inside their temporary file at the same moment. With one temporary
    # name per process they shared it: the first rename took it away from the second,
    # whose export failed (or, with other timings, renamed the other's half-written rows).
    from jobtrace.batch import summary

    both_writing = threading.Barrier(2, timeout=10)

    def write_when_both_are_writing(rows: Any, out: Any) -> None:
        both_writing.wait()
        summary.write_file_metrics_csv(rows, out)

    monkeypatch.setattr(
        "jobtrace.batch.tracker.write_file_metrics_csv", write_when_both_are_writing
    )
    metrics = BatchMetrics()
    metrics.record_file("a.txt", duration=0.5)
    target = tmp_path / "m.csv"
    errors: list[BaseException] = []

    def export() -> None:
        try:
            metrics.export_csv(target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=export) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [row["filename"] for row in csv.DictReader(target.open())] == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]


def test_many_threads_record_at_once_without_loss(store_url: str) -> None:
    use_store(store_url)
    metrics = BatchMetrics()
    metrics.start()
    threads, per_thread = 16, 1500
    barrier = threading.Barrier(threads)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            if i % 100 == 0:
                metrics.record_error(f"{t}/{i}", "OSError", "gone", duration=0.001)
            else:
                metrics.record_file(f"{t}/{i}", duration=0.001 * (i % 7 + 1), samples=1)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    metrics.finish()
    summary = metrics.summary()
    assert summary.total_files == threads * per_thread
    assert summary.error_count == threads * per_thread // 100
    stored = stored_summary(metrics.batch_id, url=store_url)
    assert stored is not None and stored.to_dict() == summary.to_dict()


def test_a_failing_block_fails_the_batch_job_but_keeps_its_files(store_url: str) -> None:
    use_store(store_url)
    with pytest.raises(RuntimeError), BatchMetrics() as metrics:
        metrics.record_file("a", duration=0.1)
        raise RuntimeError("disk full")
    assert metrics.job.status == "failed"
    stored = stored_summary(metrics.batch_id, url=store_url)
    assert stored is not None and stored.processed_count == 1


def test_start_and_finish_are_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobtrace.batch")
    metrics = BatchMetrics()
    metrics.finish()  # not started: nothing to finish
    metrics.start()
    first_start = metrics.job.start_time
    metrics.start()
    assert metrics.job.start_time == first_start
    metrics.finish()
    metrics.finish()
    assert sum("finished" in r.getMessage() for r in caplog.records) == 1


def test_a_given_batch_id_must_be_a_valid_job_id() -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        BatchMetrics("has spaces/and slashes")
    assert BatchMetrics("nightly-2026-11-23").batch_id == "nightly-2026-11-23"


def test_recording_off_still_summarises_in_memory(memory_sink: MemorySink) -> None:
    _config.configure(url="memory://off", enabled=False, install_signal_handlers=False)
    with BatchMetrics() as metrics:
        metrics.record_file("a", duration=0.5)
    jobtrace.flush()
    assert metrics.summary().processed_count == 1
    assert MemorySink.named("off").of_kind(ITEM) == []


def test_batchmetrics_is_exported_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, jobtrace; assert 'jobtrace.batch' not in sys.modules; "
        "print(jobtrace.BatchMetrics.__module__, jobtrace.batch.map.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jobtrace.batch.tracker", "jobtrace.batch.runner"]
