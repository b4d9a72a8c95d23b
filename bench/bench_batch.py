"""Batch jobs: ``record_file`` on the caller's thread, the summary of 1,000,000 stored items,
and ``jobtrace.batch.map``'s overhead per item.

Budgets: ``BatchMetrics.record_file`` at most 2 us per call; the summary of 1,000,000
stored items (SQLite) at most 1 s. The runner's overhead has no budget; it is printed.

1. **record_file.** TraceKit itself is not installable here (every release requires
   Python >= 3.12), so its peers are a plain dict appended to a list (the least any
   in-memory collector does) and a TraceKit-style collector written for this benchmark (a
   dataclass per file with start and end times, appended under a lock). Every side runs the
   same loop, ``for name in names: fn(name, duration=0.5, samples=100)``, over pre-built
   names. jobtrace runs twice: with its recorder's writer idle during the loop (exactly what
   the caller pays) and with the writer draining to ``memory://`` as in production.
2. **Summary of stored items.** One SQLite store holds a batch of N items (1,000,000;
   200,000 with ``--quick``: 5 % errors of two types, 2.5 % skips, random durations) and
   another batch of N/10. ``Store.batch_summary`` (aggregates in SQL over the covering
   index) is timed against the peer a user would otherwise write: select the batch's rows
   and compute the same summary in Python (``stats_of_items``). The two summaries must be
   equal.
3. **Runner overhead.** ``jobtrace.batch.map(fn, items, workers=4, progress=False)`` against
   a bare ``ThreadPoolExecutor(4).map(fn, items)``, for a small function (~5 us of work),
   20,000 items (5,000 with ``--quick``); the difference per item is what the runner adds
   (timing, memory peak, the item record, the batch's job).
"""

from __future__ import annotations

import gc
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread
from jobtrace import _config, _ids
from jobtrace.batch import BatchMetrics
from jobtrace.batch import map as batch_map
from jobtrace.batch.summary import BatchSummary, stats_of_items
from jobtrace.recorder import Recorder
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store

RECORD_BUDGET_NS = 2000.0
SUMMARY_BUDGET_S = 1.0


# -- 1. record_file ----------------------------------------------------------------------


@dataclass(slots=True)
class _FileRecord:
    filename: str
    start_time: float
    end_time: float
    duration: float
    samples: int
    measurements: int
    status: str


class TraceKitStyle:
    """What a TraceKit-like in-memory collector does per file (written for this benchmark)."""

    def __init__(self) -> None:
        self.files: list[_FileRecord] = []
        self._lock = threading.Lock()

    def record_file(
        self, filename: str, *, duration: float, samples: int = 0, measurements: int = 0,
        status: str = "success",
    ) -> None:  # fmt: skip
        now = time.time()
        rec = _FileRecord(filename, now - duration, now, duration, samples, measurements, status)
        with self._lock:
            self.files.append(rec)


class DictAppend:
    """The least an in-memory collector can do: one dict per file, appended."""

    def __init__(self) -> None:
        self.files: list[dict[str, Any]] = []

    def record_file(self, filename: str, *, duration: float, samples: int = 0) -> None:
        self.files.append({"filename": filename, "duration": duration, "samples": samples})


def per_call_ns(fn: Callable[..., Any], names: list[str]) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for name in names:
            fn(name, duration=0.5, samples=100)
        elapsed = time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / len(names)


def idle_recorder(directory: Path, n: int) -> Recorder:
    settings = _config.resolve(
        url="memory://bench-batch-idle",
        directory=directory,
        buffer_size=2 * n + 2,
        flush_interval=60.0,
        install_signal_handlers=False,
        env={},
    )
    # The writer wakes at min(batch_size, buffer_size // 2) records: keep both above n.
    recorder = Recorder(settings._replace(batch_size=2 * n + 2))
    recorder.ensure_started()
    return recorder


def bench_record_file(quick: bool, verdicts: Verdicts, directory: Path) -> None:
    n = 100_000 if quick else 300_000
    rounds = 5 if quick else 11
    names = [f"data/run-{i:07d}.wfm" for i in range(n)]
    _config.configure(
        url="memory://bench-batch-busy", buffer_size=2 * n + 2, install_signal_handlers=False
    )
    idle = idle_recorder(directory, n)
    state: dict[str, Any] = {}

    def case(make: Callable[[], Any], setup: Callable[[Any], None] | None = None) -> float:
        collector = make()
        if setup is not None:
            setup(collector)
        state["last"] = collector  # keep it alive past the loop, as a batch would
        result = per_call_ns(collector.record_file, names)
        idle.flush()
        return result

    def use_idle(metrics: BatchMetrics) -> None:
        metrics._recorder = idle  # the writer stays asleep during the loop

    def drain() -> None:
        from jobtrace.recorder import flush

        flush()
        for name in ("bench-batch-idle", "bench-batch-busy"):
            sink = MemorySink.named(name)
            sink.records.clear()
            sink.batches.clear()

    cases = {
        "dict": lambda: case(DictAppend),
        "tracekit": lambda: case(TraceKitStyle),
        "idle": lambda: case(BatchMetrics, use_idle),
        "busy": lambda: case(BatchMetrics),
    }
    interleave(cases, 1, on_round=lambda _i: drain())  # warm-up, untimed
    results = interleave(cases, rounds, on_round=lambda _i: drain())
    idle.close()

    base = median(results["dict"])
    rows = []
    for key, label in (
        ("dict", "dict appended to a list (peer)"),
        ("tracekit", "TraceKit-style dataclass + lock (peer)"),
        ("idle", "BatchMetrics.record_file, caller only"),
        ("busy", "BatchMetrics.record_file, with writer"),
    ):
        ns = median(results[key])
        word = "-"
        if key in ("idle", "busy"):
            word = verdicts.check(
                label,
                ns <= RECORD_BUDGET_NS,
                f"{ns:.0f} ns/call (budget <= {RECORD_BUDGET_NS:.0f} ns), "
                f"{ns / base:.2f}x dict append, "
                f"{ns / median(results['tracekit']):.2f}x TraceKit-style",
            )
        rows.append([label, f"{ns:.0f}", spread(results[key]), f"{ns / base:.2f}", word])
    print(f"1. record_file, {rounds} rounds x {n:,} calls")
    print(format_table(["case", "ns/call", "rounds min..max", "x dict", "budget"], rows))
    print()


# -- 2. summary of stored items ------------------------------------------------------------


def fill_store(store: Store, batch_id: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    now = time.time()
    batch = []
    for i in range(n):
        status = "error" if i % 20 == 3 else "skipped" if i % 40 == 7 else "success"
        error_type = ("ValueError" if i % 3 else "OSError") if status == "error" else None
        batch.append(
            ("item", _ids.local_unique_id(), batch_id, f"in/{i:07d}.dat", now + i * 1e-3,
             rng.random(), rng.randrange(100_000), 3, rng.randrange(1 << 20), status,
             error_type, "bad" if error_type else None, 20_480.0, None)
        )  # fmt: skip
        if len(batch) == 20_000:
            store.write(batch)
            batch = []
    if batch:
        store.write(batch)


def python_summary(store: Store, batch_id: str) -> BatchSummary:
    """The peer: select the batch's rows, then aggregate in Python."""
    with store.engine.connect() as conn:
        raw = conn.exec_driver_sql(
            "SELECT 'item', id, job_id, name, start_time, duration, samples, measurements, "
            "bytes, status, error_type FROM items WHERE job_id = ?",
            (batch_id,),
        ).all()
    return BatchSummary.from_stats(batch_id, stats_of_items(raw, None, None))


def bench_summary(quick: bool, verdicts: Verdicts, directory: Path) -> None:
    n = 200_000 if quick else 1_000_000
    rounds = 3 if quick else 5
    store = Store(f"sqlite:///{directory / 'items.db'}")
    start = time.perf_counter()
    fill_store(store, "big-batch", n, 1)
    fill_store(store, "other-batch", n // 10, 2)
    print(f"2. summary of {n:,} stored items (store filled in {time.perf_counter() - start:.1f} s)")
    sql = store.batch_summary("big-batch")
    peer = python_summary(store, "big-batch")
    assert sql is not None and sql.to_dict() == peer.to_dict(), (sql, peer)

    def timed(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    results = interleave(
        {
            "sql": lambda: timed(lambda: store.batch_summary("big-batch")),
            "python": lambda: timed(lambda: python_summary(store, "big-batch")),
        },
        rounds,
    )
    store.close()
    sql_s, py_s = median(results["sql"]), median(results["python"])
    word = verdicts.check(
        f"summary of {n:,} stored items",
        sql_s <= SUMMARY_BUDGET_S * n / 1_000_000,
        f"{sql_s * 1000:.0f} ms (budget <= {SUMMARY_BUDGET_S * 1000 * n / 1_000_000:.0f} ms "
        f"for {n:,}), {py_s / sql_s:.1f}x faster than rows loaded into Python",
    )
    rows = [
        ["rows selected, summarised in Python (peer)", f"{py_s * 1000:.0f}",
         spread([x * 1000 for x in results["python"]]), "1.00", "-"],
        ["Store.batch_summary (SQL)", f"{sql_s * 1000:.0f}",
         spread([x * 1000 for x in results["sql"]]), f"{py_s / sql_s:.2f}", word],
    ]  # fmt: skip
    print(format_table(["case", "ms", "rounds min..max", "peer / case", "budget"], rows))
    print()


# -- 3. runner overhead ----------------------------------------------------------------------


def small_work(x: int) -> int:
    total = 0
    for i in range(100):
        total += i * x
    return total


def bench_runner(quick: bool) -> None:
    n = 5_000 if quick else 20_000
    rounds = 5 if quick else 9
    items = list(range(n))
    _config.configure(url="memory://bench-batch-runner", install_signal_handlers=False)

    def bare() -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(small_work, items))
        return (time.perf_counter() - t0) / n

    def runner() -> float:
        t0 = time.perf_counter()
        batch_map(small_work, items, workers=4, progress=False)
        return (time.perf_counter() - t0) / n

    def drain(_round: int) -> None:
        from jobtrace.recorder import flush

        flush()
        sink = MemorySink.named("bench-batch-runner")
        sink.records.clear()
        sink.batches.clear()

    interleave({"bare": bare, "runner": runner}, 1, on_round=drain)
    results = interleave({"bare": bare, "runner": runner}, rounds, on_round=drain)
    bare_us, runner_us = median(results["bare"]) * 1e6, median(results["runner"]) * 1e6
    print(f"3. runner overhead, {rounds} rounds x {n:,} items, 4 threads (no budget)")
    rows = [
        ["ThreadPoolExecutor(4).map (peer)", f"{bare_us:.1f}",
         spread([x * 1e6 for x in results["bare"]]), "-", "1.00"],
        ["jobtrace.batch.map(workers=4)", f"{runner_us:.1f}",
         spread([x * 1e6 for x in results["runner"]]), f"{runner_us - bare_us:+.1f}",
         f"{runner_us / bare_us:.2f}"],
    ]  # fmt: skip
    print(format_table(["case", "us/item", "rounds min..max", "overhead us", "ratio"], rows))
    print()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    banner(
        "bench_batch: record_file, stored-item summary, runner overhead",
        args.quick,
        [
            "TraceKit requires Python >= 3.12 and cannot be installed here; its peers are a "
            "dict append and a TraceKit-style collector (dataclass + lock)",
        ],
    )
    verdicts = Verdicts("bench_batch")
    with tempfile.TemporaryDirectory(prefix="jt-bench-batch-") as tmp:
        directory = Path(tmp)
        _config.configure(
            url="memory://bench-batch", directory=str(directory), install_signal_handlers=False
        )
        bench_record_file(args.quick, verdicts, directory)
        bench_summary(args.quick, verdicts, directory)
        bench_runner(args.quick)
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
