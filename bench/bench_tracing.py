"""Cost of one span: jobtrace's ``Trace`` and ``@trace`` vs OpenTelemetry's SDK and OSProfiler.

Budgets: a span with recording on at most 1.5 us (1500 ns), as a root and as a child; a
span with recording off at most 0.3 us (300 ns); and jobtrace at least 10x cheaper per span
than each peer (peer / jobtrace >= 10).

Every case times the same kind of loop, with nothing subtracted:

- spans: ``for _ in range(n): with open_span("x"): pass``, where ``open_span`` is
  ``jobtrace.Trace``, OpenTelemetry's ``tracer.start_as_current_span`` or OSProfiler's
  ``profiler.Trace``; as a root span (nothing open) and as a child (the loop runs inside
  ``with open_span("root"):``);
- calls: ``for _ in range(n): fn(1, "x")``, where ``fn`` is one function undecorated, under
  ``@jobtrace.trace("x")`` (default arguments, and ``hide_args=True``) and under
  ``@profiler.trace("x")`` (likewise).

jobtrace runs every case twice, once per sink, with its writer thread running as in
production (flush interval 1 s, a batch every 20,000 records), a buffer of 2n+2 records and
a per-trace cap of 2n+2 spans, so nothing is dropped (the default cap of 10,000 would turn
the rest of the child loop into cheaper, unrecorded drops):

- "kept": ``memory://bench-tracing``, which keeps every record, as OpenTelemetry's
  in-memory exporter keeps every span; compared with OpenTelemetry, and held to the
  absolute budgets;
- "discarded": a sink that counts the records it is handed and keeps none, as OSProfiler's
  no-op notifier drops every message; compared with OSProfiler. Everything on the caller's
  side is the same; what differs is that nothing stays alive for the garbage collector.

Recording off is ``jobtrace.configure(..., enabled=False)``. OpenTelemetry runs a
``TracerProvider`` with a ``BatchSpanProcessor`` (default batch size and delay, queue
raised to 2n+2 so nothing is dropped) over an ``InMemorySpanExporter``. OSProfiler is
initialised once with ``profiler.init(hmac_key=...)`` and a no-op notifier installed with
``osprofiler.notifier.set``.

After every case the spans are flushed, counted (every span must have been recorded) and
cleared: jobtrace's sinks, OpenTelemetry's exporter. The garbage collector stays on
during the loops, as in a traced program, and a full collection runs before each loop so
none inherits another's garbage; the time spent in collections during the loop is shown
per span. Every case runs the same number of spans per round, so each side's in-memory
sink holds as many spans at the end of a loop: a side that kept more objects alive would
pay more for every collection. A peer that is not installed is skipped with a note
(``pip install -e '.[bench]'`` installs both).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jobtrace
from _common import Verdicts, banner, format_table, interleave, median, parse_args
from jobtrace.recorder import get_recorder
from jobtrace.sinks import register_sink
from jobtrace.sinks.memory import MemorySink

SPAN_BUDGET_NS = 1500.0
OFF_BUDGET_NS = 300.0
MIN_PEER_RATIO = 10.0
SINK_NAME = "bench-tracing"
URL = f"memory://{SINK_NAME}"
DISCARD_SCHEME = "bench-discard"
KEPT = "kept"
DISCARDED = "discarded"
OFF = "jobtrace Trace, recording off"
HMAC_KEY = "bench-tracing"

OpenSpan = Callable[[str], AbstractContextManager[Any]]
Work = Callable[[int, str], int]


def work(a: int, b: str) -> int:
    """The function every call case runs, decorated or not."""
    return a


# -- timed loops ---------------------------------------------------------------------------


def loop_spans(open_span: OpenSpan, n: int) -> int:
    """Nanoseconds for ``n`` empty ``with open_span("x"):`` blocks."""
    loop = range(n)
    start = time.perf_counter_ns()
    for _ in loop:
        with open_span("x"):
            pass
    return time.perf_counter_ns() - start


def loop_child_spans(open_span: OpenSpan, n: int) -> int:
    """As :func:`loop_spans`, inside an open root span (opened and closed untimed)."""
    with open_span("root"):
        return loop_spans(open_span, n)


def loop_calls(fn: Work, n: int) -> int:
    """Nanoseconds for ``n`` calls ``fn(1, "x")``."""
    loop = range(n)
    start = time.perf_counter_ns()
    for _ in loop:
        fn(1, "x")
    return time.perf_counter_ns() - start


class GcClock:
    """Time spent in garbage collections, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.ns = 0
        self._started = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.ns += time.perf_counter_ns() - self._started

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


@dataclass
class Case:
    """One measured variant: how to run it, and what to check afterwards."""

    label: str
    n: int
    run: Callable[[int], int]  # the timed loop: n -> elapsed ns
    before: Callable[[], None] = lambda: None  # untimed set-up
    after: Callable[[], int] = lambda: -1  # untimed: flush, count and clear; -1: not counted
    expected: int = -1  # spans that must have been recorded (-1: not checked)
    gc_ns: list[float] = field(default_factory=list)
    miscounts: list[str] = field(default_factory=list)


def measure(case: Case, gc_clock: GcClock) -> float:
    """One round of ``case``: ns per span (or call); records its GC time and span count."""
    case.before()
    gc.collect()
    gc_clock.ns = 0
    elapsed = case.run(case.n)
    gc_ns = gc_clock.ns
    recorded = case.after()
    if case.expected >= 0 and recorded != case.expected:
        case.miscounts.append(f"{recorded} recorded, {case.expected} expected")
    case.gc_ns.append(gc_ns / case.n)
    return elapsed / case.n


def runner(case: Case, gc_clock: GcClock) -> Callable[[], float]:
    return lambda: measure(case, gc_clock)


# -- the sides -----------------------------------------------------------------------------


def configure_jobtrace(url: str, directory: Path, n: int, *, enabled: bool = True) -> None:
    jobtrace.configure(
        url,
        directory=str(directory),
        enabled=enabled,
        flush_interval=1.0,
        buffer_size=2 * n + 2,
        trace_max_spans=2 * n + 2,
        install_signal_handlers=False,
    )


class DiscardingSink:
    """Counts what it is given and keeps nothing: jobtrace's no-op notifier."""

    received = 0

    def __init__(self, url: str) -> None:
        pass

    def write(self, records: Sequence[Any]) -> None:
        DiscardingSink.received += len(records)

    def close(self) -> None:
        pass


register_sink(DISCARD_SCHEME, f"{__name__}:DiscardingSink")


def jobtrace_cases(directory: Path, n: int, url: str, where: str) -> list[Case]:
    """jobtrace's cases recording to ``url``: the memory sink (``where`` = "kept") or the
    discarding one ("discarded"). Each case points the recorder at its sink first."""

    def count() -> int:
        if url == URL:
            records = MemorySink.named(SINK_NAME).records
            counted = len(records)
            records.clear()
            return counted
        counted, DiscardingSink.received = DiscardingSink.received, 0
        return counted

    def on() -> None:
        configure_jobtrace(url, directory, n)
        count()

    def off() -> None:
        configure_jobtrace(url, directory, n, enabled=False)

    def drain() -> int:
        jobtrace.flush()
        return count()

    open_span: OpenSpan = jobtrace.Trace
    traced: Work = jobtrace.trace("x")(work)
    traced_hidden: Work = jobtrace.trace("x", hide_args=True)(work)
    cases = [
        Case(f"jobtrace Trace, root, {where}", n, lambda k: loop_spans(open_span, k),
             before=on, after=drain, expected=n),
        Case(f"jobtrace Trace, child, {where}", n, lambda k: loop_child_spans(open_span, k),
             before=on, after=drain, expected=n + 1),
        Case(f"jobtrace @trace call, {where}", n, lambda k: loop_calls(traced, k),
             before=on, after=drain, expected=n),
        Case(f"jobtrace @trace(hide_args) call, {where}", n,
             lambda k: loop_calls(traced_hidden, k), before=on, after=drain, expected=n),
    ]  # fmt: skip
    if where == KEPT:
        cases.append(
            Case(OFF, n, lambda k: loop_spans(open_span, k), before=off, after=drain, expected=0)
        )
    return cases


@dataclass
class Peer:
    cases: list[Case]
    close: Callable[[], None]
    version: str


def otel_peer(n: int) -> Peer | None:
    try:
        from importlib.metadata import version

        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError as exc:
        print(f"note: OpenTelemetry SDK not installed ({exc}); its comparisons are skipped")
        return None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2 * n + 2))
    tracer = provider.get_tracer("bench_tracing")
    open_span: OpenSpan = tracer.start_as_current_span

    def drain() -> int:
        provider.force_flush()
        count = len(exporter.get_finished_spans())
        exporter.clear()
        return count

    cases = [
        Case("OTel span, root", n, lambda k: loop_spans(open_span, k),
             after=drain, expected=n),
        Case("OTel span, child", n,
             lambda k: loop_child_spans(open_span, k), after=drain, expected=n + 1),
    ]  # fmt: skip
    return Peer(cases, provider.shutdown, f"opentelemetry-sdk {version('opentelemetry-sdk')}")


def discard(info: dict[str, Any], context: Any = None) -> None:
    """OSProfiler's no-op notifier."""


def osprofiler_peer(n: int) -> Peer | None:
    try:
        from importlib.metadata import version

        from osprofiler import notifier, profiler
    except ImportError as exc:
        print(f"note: OSProfiler not installed ({exc}); its comparisons are skipped")
        return None
    profiler.init(hmac_key=HMAC_KEY)
    open_span: OpenSpan = profiler.Trace
    traced: Work = profiler.trace("x")(work)
    traced_hidden: Work = profiler.trace("x", hide_args=True)(work)

    # Untimed check that both trace points notify (a start and a stop each), then the no-op.
    seen: list[dict[str, Any]] = []
    notifier.set(lambda info, context=None: seen.append(info))
    with open_span("x"):
        pass
    traced(1, "x")
    traced_hidden(1, "x")
    notifier.set(discard)
    if len(seen) != 6:
        print(f"note: OSProfiler sent {len(seen)} notifications for 3 trace points, not 6")

    cases = [
        Case("OSProfiler Trace", n, lambda k: loop_spans(open_span, k)),
        Case("OSProfiler @trace call", n, lambda k: loop_calls(traced, k)),
        Case("OSProfiler @trace(hide_args) call", n,
             lambda k: loop_calls(traced_hidden, k)),
    ]  # fmt: skip
    return Peer(cases, profiler.clean, f"osprofiler {version('osprofiler')}")


def clock_cost_ns() -> float:
    """What one ``time.perf_counter_ns()`` costs here (context for the absolute budgets)."""
    clock = time.perf_counter_ns
    n = 200_000
    best = float("inf")
    for _ in range(5):
        start = clock()
        for _ in range(n):
            clock()
        best = min(best, (clock() - start) / n)
    return best


# -- main ----------------------------------------------------------------------------------


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 5_000 if args.quick else 30_000
    rounds = 5 if args.quick else 9
    banner(
        "bench_tracing: jobtrace spans vs OpenTelemetry SDK and OSProfiler",
        args.quick,
        [
            f"{rounds} rounds x {n:,} spans (or calls) per case, for every side",
            "GC on during loops, a full collection before each; nothing subtracted",
        ],
    )
    verdicts = Verdicts("bench_tracing")

    with tempfile.TemporaryDirectory(prefix="jt-bench-tracing-") as tmp:
        cases = [
            *jobtrace_cases(Path(tmp), n, URL, KEPT),
            *jobtrace_cases(Path(tmp), n, f"{DISCARD_SCHEME}://", DISCARDED),
            Case("undecorated call", n, lambda k: loop_calls(work, k)),
        ]
        peers = [p for p in (otel_peer(n), osprofiler_peer(n)) if p is not None]
        for peer in peers:
            cases.extend(peer.cases)
            print(f"peer: {peer.version}")
        print(f"context: one time.perf_counter_ns() costs {clock_cost_ns():.0f} ns here\n")
        sys.stdout.flush()

        gc_clock = GcClock()
        by_label = {case.label: case for case in cases}
        runners = {case.label: runner(case, gc_clock) for case in cases}
        interleave(runners, 1)  # untimed warm-up: writer threads, caches, first allocations
        for case in cases:
            case.gc_ns.clear()
        results = interleave(runners, rounds)
        gc_clock.close()
        for peer in peers:
            peer.close()
        dropped = get_recorder().dropped

    ns = {label: median(values) for label, values in results.items()}
    budgets = {
        f"jobtrace Trace, root, {KEPT}": SPAN_BUDGET_NS,
        f"jobtrace Trace, child, {KEPT}": SPAN_BUDGET_NS,
        OFF: OFF_BUDGET_NS,
    }
    rows = []
    for label, case in by_label.items():
        word = "-"
        if label in budgets:
            budget = budgets[label]
            word = verdicts.check(
                label, ns[label] <= budget, f"{ns[label]:.0f} ns/span (budget <= {budget:.0f} ns)"
            )
        rows.append(
            [
                label,
                f"{ns[label]:.0f}",
                f"{min(results[label]):.0f}..{max(results[label]):.0f}",
                f"{median(case.gc_ns):.0f}",
                word,
            ]
        )
    print(format_table(["case", "ns/span", "rounds min..max", "of which GC", "budget"], rows))

    plain = ns["undecorated call"]
    print("\n@trace overhead over the undecorated call (information, no budget):")
    for label in (f"jobtrace @trace call, {KEPT}", f"jobtrace @trace(hide_args) call, {KEPT}"):
        print(f"  {label}: +{ns[label] - plain:.0f} ns, {ns[label] / plain:.1f}x")

    # Like against like: OpenTelemetry's in-memory exporter keeps every span, as the memory
    # sink does; OSProfiler's no-op notifier drops every message, as the discarding sink does.
    pairs = [
        ("OTel span, root", f"jobtrace Trace, root, {KEPT}"),
        ("OTel span, child", f"jobtrace Trace, child, {KEPT}"),
        ("OSProfiler Trace", f"jobtrace Trace, root, {DISCARDED}"),
        ("OSProfiler Trace", f"jobtrace Trace, child, {DISCARDED}"),
        ("OSProfiler @trace call", f"jobtrace @trace call, {DISCARDED}"),
        ("OSProfiler @trace(hide_args) call", f"jobtrace @trace(hide_args) call, {DISCARDED}"),
    ]
    ratio_rows = []
    for peer_label, own_label in pairs:
        if peer_label not in ns:
            continue
        ratio = ns[peer_label] / ns[own_label]
        word = verdicts.check(
            f"{peer_label} / {own_label}",
            ratio >= MIN_PEER_RATIO,
            f"{ratio:.1f}x (budget >= {MIN_PEER_RATIO:.0f}x)",
        )
        ratio_rows.append(
            [
                f"{peer_label} / {own_label}",
                f"{ns[peer_label]:.0f}",
                f"{ns[own_label]:.0f}",
                f"{ratio:.1f}",
                word,
            ]
        )
    if ratio_rows:
        print()
        print(
            format_table(
                ["peer / jobtrace", "peer ns", "jobtrace ns", "ratio", "budget"], ratio_rows
            )
        )
    else:
        print("\nno peer installed: no ratios (pip install -e '.[bench]')")

    print(f"\nrecords dropped by the recorder: {dropped} (must be 0)")
    if dropped:
        verdicts.check("no records dropped", False, f"{dropped} records dropped")
    for case in cases:
        if case.miscounts:
            verdicts.check(
                f"{case.label}: every span recorded",
                False,
                f"{len(case.miscounts)} round(s) off, e.g. {case.miscounts[0]}",
            )
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
