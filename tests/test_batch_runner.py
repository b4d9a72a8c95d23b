"""jobtrace.batch.map: threads and processes, per-item records, failures, skips, progress."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest

import jobtrace
import jobtrace.batch
from jobtrace import _config
from jobtrace.batch import Skip, report, stored_summary
from jobtrace.batch.progress import LogProgress
from jobtrace.errors import ConfigurationError
from jobtrace.sinks.memory import MemorySink


def use_store(url: str) -> None:
    _config.configure(url=url, install_signal_handlers=False)


# Module-level, so process workers can unpickle them.
def parse(n: int) -> int:
    if n % 7 == 3:
        raise ValueError(f"item {n} is corrupt")
    if n % 11 == 5:
        raise Skip("nothing to do")
    report(samples=n, measurements=2, nbytes=100 * n)
    report(samples=1)  # reports add up
    return n * n


def die_on_three(n: int) -> int:
    if n == 3:
        os._exit(1)  # a worker process that dies without a word
    return n


def allocate(n: int) -> int:
    block = bytearray(n * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    return len(block)


_worker_metrics: dict[int, jobtrace.BatchMetrics] = {}


def record_in_worker(n: int) -> int:
    # A BatchMetrics living in the worker process: its records leave through that process's
    # own recorder, which must flush before the pool's worker exits.
    metrics = _worker_metrics.setdefault(os.getpid(), jobtrace.BatchMetrics("worker-side"))
    metrics.record_file(f"w{n}", duration=0.01, samples=n)
    return n


def expected_results(items: range) -> list[int | None]:
    return [None if n % 7 == 3 or n % 11 == 5 else n * n for n in items]


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_map_returns_results_in_order_and_records_every_item(
    store_url: str, processes: bool
) -> None:
    use_store(store_url)
    items = range(60)
    results = jobtrace.batch.map(parse, items, workers=3, processes=processes, progress=False)
    assert list(results) == expected_results(items)
    assert sorted(results.failures) == [n for n in items if n % 7 == 3]
    assert results.failures[3] == ("ValueError", "item 3 is corrupt")
    assert sorted(results.skipped) == [n for n in items if n % 11 == 5 and n % 7 != 3]
    summary = results.summary()
    assert (summary.total_files, summary.error_count) == (60, len(results.failures))
    assert summary.skip_count == len(results.skipped)
    assert summary.errors.by_type == {"ValueError": len(results.failures)}
    stored = stored_summary(results.batch_id, url=store_url)
    assert stored is not None and stored.to_dict() == summary.to_dict()
    assert results.metrics.job.name == "parse" and results.metrics.job.status == "succeeded"


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_reported_counts_and_measurements_reach_the_item(processes: bool) -> None:
    results = jobtrace.batch.map(parse, [4, 3, 5], workers=2, processes=processes, progress=False)
    files = {f["filename"]: f for f in results.metrics.get_file_metrics()}
    assert (files["4"]["samples"], files["4"]["measurements"], files["4"]["bytes"]) == (5, 2, 400)
    assert files["3"]["status"] == "error" and files["3"]["error_message"] == "item 3 is corrupt"
    assert files["5"]["status"] == "skipped" and files["5"]["error_message"] == "nothing to do"
    for row in files.values():
        assert row["duration_seconds"] >= 0 and row["memory_peak_bytes"] > 0


def remote_work(n: int) -> int:
    report(nbytes=n, memory_peak=123 * 1024 * 1024)  # e.g. measured by a service
    return n


def test_a_reported_memory_peak_replaces_the_measured_one() -> None:
    results = jobtrace.batch.map(remote_work, [7], progress=False)
    (row,) = results.metrics.get_file_metrics()
    assert (row["memory_peak_bytes"], row["bytes"]) == (123 * 1024 * 1024, 7)


def test_a_process_worker_measures_its_own_items_peak_memory() -> None:
    results = jobtrace.batch.map(allocate, [2, 96, 2], workers=1, processes=True, progress=False)
    peaks = [f["memory_peak_bytes"] for f in results.metrics.get_file_metrics()]
    assert peaks[1] >= 96 * 1024 * 1024
    if Path("/proc/self/clear_refs").exists():
        # The high-water mark is reset before each item, so the big one does not leak into
        # the small one that follows it.
        assert peaks[2] < peaks[1] - 64 * 1024 * 1024


def test_a_dead_worker_process_fails_its_items_but_map_returns(store_url: str) -> None:
    use_store(store_url)
    results = jobtrace.batch.map(die_on_three, range(8), workers=2, processes=True, progress=False)
    assert len(results) == 8
    assert 3 in results.failures
    assert "BrokenProcessPool" in results.failures[3].error_type
    stored = stored_summary(results.batch_id, url=store_url)
    assert stored is not None and stored.total_files == 8


def test_records_made_inside_worker_processes_reach_the_store(store_url: str) -> None:
    use_store(store_url)
    jobtrace.batch.map(record_in_worker, range(40), workers=2, processes=True, progress=False)
    stored = stored_summary("worker-side", url=store_url)
    assert stored is not None
    assert (stored.total_files, stored.throughput.samples_per_second > 0) == (40, True)


def test_items_on_threads_run_with_the_batch_as_the_current_job() -> None:
    def current(_: int) -> str | None:
        job = jobtrace.current_job()
        return None if job is None else job.id

    results = jobtrace.batch.map(current, range(6), workers=3, progress=False)
    assert set(results) == {results.batch_id}
    assert jobtrace.current_job() is None


def test_an_empty_batch_runs_and_summarises_to_zeros() -> None:
    results = jobtrace.batch.map(parse, [], progress=False)
    assert list(results) == [] and results.summary().total_files == 0


def test_items_are_named_by_path_or_str(memory_sink: MemorySink) -> None:
    items = [Path("data/a.csv"), "b.csv", b"c.csv", ("tuple", 1)]
    results = jobtrace.batch.map(lambda x: x, items, workers=2, progress=False)
    names = [f["filename"] for f in results.metrics.get_file_metrics()]
    assert sorted(names) == sorted(["data/a.csv", "b.csv", "c.csv", "('tuple', 1)"])


def test_a_lambda_cannot_go_to_processes_and_says_so_at_once() -> None:
    with pytest.raises(ConfigurationError, match="picklable"):
        jobtrace.batch.map(lambda x: x, [1, 2], processes=True, progress=False)


def test_report_outside_an_item_is_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report(samples=1)
    report(samples=1)
    assert sum("outside a batch item" in r.getMessage() for r in caplog.records) <= 1


def test_the_batch_name_id_and_experiment_can_be_given() -> None:
    results = jobtrace.batch.map(
        abs, [-1, 2], name="absolutes", batch_id="abs-run-1", experiment="e", progress=False
    )
    job = results.metrics.job
    assert (results.batch_id, job.name, job.experiment) == ("abs-run-1", "absolutes", "e")
    assert list(results) == [1, 2]


def test_plain_progress_lines_count_items_rate_eta_and_errors() -> None:
    out = io.StringIO()
    progress = LogProgress("batch x", 4, interval=0.0, out=out)
    progress.start()
    for failed in (False, True, False, False):
        progress.advance(failed)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("jobtrace: batch x: 1/4 items (25%), ")
    assert "ETA" in lines[0] and lines[0].endswith("0 errors")
    assert "2/4 items (50%)" in lines[1] and lines[1].endswith("1 errors")
    assert len(lines) == 4  # the last item's line is the final one
    assert lines[-1].startswith("jobtrace: batch x: 4/4 items (100%)")
    assert ", 1 errors, done in " in lines[-1]


def test_map_prints_a_final_progress_line_when_not_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = jobtrace.batch.map(parse, range(10), workers=2)
    err = capsys.readouterr().err
    assert f"batch {results.batch_id} (parse): 10/10 items (100%)" in err
    assert f"{len(results.failures)} errors" in err


def test_a_forced_rich_bar_runs_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    results = jobtrace.batch.map(parse, range(10), workers=2, progress=True)
    assert len(results) == 10
    assert "10/10" in capsys.readouterr().err


def test_batch_results_pickle_as_plain_lists() -> None:
    results = jobtrace.batch.map(abs, [-3], progress=False)
    assert pickle.loads(pickle.dumps(list(results))) == [3]
