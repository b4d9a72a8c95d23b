"""Cost of recording one record on the caller's thread: ``Recorder.record`` vs ``deque.append``.

Budget: at most 1 us (1000 ns) per record; ``log_metric`` and a span under 2 us each while
the buffer spills to the spool.

Both sides run the same loop (``for _ in range(n): fn(t)``) over the same tuple, so the
loop's own overhead cancels in the difference. Two jobtrace variants are measured:

- *caller only*: the writer thread is started but idle (high-water mark above ``n``, flush
  interval 60 s), so the loop times exactly what the caller pays;
- *with writer*: default batch size and flush interval, so the writer thread wakes every
  20,000 records and drains the buffer into a ``memory://`` sink while the loop runs, and
  the caller also pays for sharing the GIL with it.

The buffer is emptied between rounds, and is large enough that nothing is ever dropped.

A second table times the caller while spilling: a 50,000-record buffer and a writer held
busy for the whole loop (as a sink that cannot keep up holds it), so every record past the
first 50,000 goes to the spool on local disk, a batch at a time, on the caller's thread.
``Recorder.record``, ``jobtrace.log_metric`` (inside a job) and an empty ``with
jobtrace.Trace(...)`` span are timed against a bare ``deque.append`` in the same run; the
spool is replayed (untimed) after each round and must drop nothing.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jobtrace
from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread
from jobtrace import _config
from jobtrace.model import Record
from jobtrace.recorder import Recorder, get_recorder
from jobtrace.sinks.memory import MemorySink

BUDGET_NS = 1000.0
#: log_metric and a span, on the caller, while the buffer spills (issue 11).
SPILL_BUDGET_NS = 2000.0
SPILL_BUFFER = 50_000
RECORD: Record = ("metric", "job", "loss", 41, 0.5, 1.0)


def per_call_ns(fn: Callable[[Record], Any], n: int) -> float:
    """Nanoseconds per ``fn(RECORD)`` over a tight loop of ``n`` calls, GC paused."""
    t = RECORD
    loop = range(n)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in loop:
            fn(t)
        elapsed = time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / n


def make_recorder(directory: Path, name: str, n: int, *, writer_idle: bool) -> Recorder:
    settings = _config.resolve(
        url=f"memory://{name}",
        directory=directory,
        buffer_size=2 * n + 2,
        flush_interval=60.0 if writer_idle else 1.0,
        install_signal_handlers=False,
        env={},
    )
    if writer_idle:
        # The writer wakes at min(batch_size, buffer_size // 2) records: keep both above n.
        settings = settings._replace(batch_size=2 * n + 2)
    recorder = Recorder(settings)
    recorder.ensure_started()  # thread start is a one-off cost, not the per-record cost
    return recorder


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 200_000 if args.quick else 1_000_000
    rounds = 5 if args.quick else 15
    banner(
        "bench_record: Recorder.record vs deque.append",
        args.quick,
        [f"{rounds} rounds x {n:,} calls per case; same loop and tuple on both sides"],
    )
    verdicts = Verdicts("bench_record")

    with tempfile.TemporaryDirectory(prefix="jt-bench-record-") as tmp:
        directory = Path(tmp)
        idle = make_recorder(directory, "bench-idle", n, writer_idle=True)
        busy = make_recorder(directory, "bench-busy", n, writer_idle=False)
        sinks = [MemorySink.named("bench-idle"), MemorySink.named("bench-busy")]
        peer: deque[Record] = deque()

        def run_peer() -> float:
            peer.clear()
            return per_call_ns(peer.append, n)

        def run_idle() -> float:
            result = per_call_ns(idle.record, n)
            idle.flush()
            return result

        def run_busy() -> float:
            result = per_call_ns(busy.record, n)
            busy.flush()
            return result

        def reset(_round: int) -> None:
            peer.clear()
            for sink in sinks:
                sink.records.clear()
                sink.batches.clear()

        # One untimed warm-up round (first-touch allocation of deque blocks, caches).
        interleave({"peer": run_peer, "idle": run_idle, "busy": run_busy}, 1, on_round=reset)
        results = interleave(
            {"peer": run_peer, "idle": run_idle, "busy": run_busy}, rounds, on_round=reset
        )
        idle.close()
        busy.close()
        dropped = idle.dropped + busy.dropped

    peer_ns = median(results["peer"])
    rows = [["deque.append (peer)", f"{peer_ns:.1f}", spread(results["peer"]), "-", "1.00", "-"]]
    for key, label in (
        ("idle", "Recorder.record, caller only"),
        ("busy", "Recorder.record, with writer"),
    ):
        ns = median(results[key])
        ratio = ns / peer_ns
        word = verdicts.check(
            label,
            ns <= BUDGET_NS,
            f"{ns:.0f} ns/record (budget <= {BUDGET_NS:.0f} ns), {ratio:.2f}x deque.append, "
            f"+{ns - peer_ns:.0f} ns",
        )
        rows.append(
            [label, f"{ns:.1f}", spread(results[key]), f"{ns - peer_ns:+.1f}", f"{ratio:.2f}", word]
        )
    print(
        format_table(
            ["case", "ns/call", "rounds min..max", "diff ns", "ratio", "budget"],
            rows,
        )
    )
    print(f"\nrecords dropped: {dropped} (must be 0 for the figures to mean anything)")
    if dropped:
        verdicts.check("no records dropped", False, f"{dropped} records dropped")
    print()
    spilling(n, max(3, rounds // 3), verdicts)
    return verdicts.report(args.strict)


def spilling(n: int, rounds: int, verdicts: Verdicts) -> None:
    """Per-call cost while every record past the buffer spills to the spool."""
    print(f"-- while spilling: buffer {SPILL_BUFFER:,}, writer held busy, {n:,} calls --")
    with tempfile.TemporaryDirectory(prefix="jt-bench-spill-") as tmp:
        _config.configure(
            url="memory://bench-spill",
            directory=tmp,
            buffer_size=SPILL_BUFFER,
            install_signal_handlers=False,
        )
        recorder = get_recorder()
        sink = MemorySink.named("bench-spill")
        peer: deque[Record] = deque()
        log_metric, trace = jobtrace.log_metric, jobtrace.Trace

        def held(loop: Callable[[], None]) -> float:
            recorder.flush(timeout=None)
            spilled = recorder.spilled
            gc.disable()
            with recorder._locked(None):  # the writer cannot take anything meanwhile
                start = time.perf_counter_ns()
                loop()
                elapsed = time.perf_counter_ns() - start
            gc.enable()
            assert recorder.spilled > spilled, "nothing spilled: the figure would mislead"
            recorder.flush(timeout=None)  # replay the spool, untimed
            sink.records.clear()
            sink.batches.clear()
            return elapsed / n

        def run_peer() -> float:
            peer.clear()
            return per_call_ns(peer.append, n)

        def run_record() -> float:
            record = recorder.record
            t = RECORD

            def loop() -> None:
                for _ in range(n):
                    record(t)

            return held(loop)

        def run_metric() -> float:
            def loop() -> None:
                for step in range(n):
                    log_metric("loss", 0.5, step)

            return held(loop)

        def run_span() -> float:
            def loop() -> None:
                for _ in range(n):
                    with trace("step"):
                        pass

            return held(loop)

        with jobtrace.job("bench-spill"):
            cases = {"peer": run_peer, "record": run_record, "metric": run_metric}
            cases["span"] = run_span
            results = interleave(cases, rounds)
        recorder.flush(timeout=None)
        dropped = recorder.dropped
        _config.configure(url="memory://bench-done", install_signal_handlers=False)

    peer_ns = median(results["peer"])
    rows = [["deque.append (peer)", f"{peer_ns:.1f}", spread(results["peer"]), "1.00", "-"]]
    for key, label in (
        ("record", "Recorder.record, spilling"),
        ("metric", "log_metric, spilling"),
        ("span", "span (with Trace), spilling"),
    ):
        ns = median(results[key])
        ratio = ns / peer_ns
        word = verdicts.check(
            label,
            ns <= SPILL_BUDGET_NS,
            f"{ns:.0f} ns/call (budget <= {SPILL_BUDGET_NS:.0f} ns), {ratio:.2f}x deque.append",
        )
        rows.append([label, f"{ns:.1f}", spread(results[key]), f"{ratio:.2f}", word])
    print(format_table(["case", "ns/call", "rounds min..max", "ratio", "budget"], rows))
    print(f"records dropped while spilling: {dropped} (must be 0)")
    if dropped:
        verdicts.check("nothing dropped while spilling", False, f"{dropped} records dropped")


if __name__ == "__main__":
    sys.exit(main())
