"""Cost of instruments and ``@profile``: jobtrace vs prometheus_client and Phanos.

Budgets: a counter ``inc`` and a histogram ``observe`` cheaper than prometheus_client's, in
its single-process and its multiprocess mode, both without labels and through a bound
labelled series (peer / jobtrace > 1); a ``@jobtrace.profile``d call at most 2 us
(2000 ns) and at least 5x cheaper than a ``@phanos.profile``d one (Phanos / jobtrace >= 5).

Every case times the same kind of loop, ``for _ in range(n): fn(*args)``, with nothing
subtracted, the garbage collector on (a full collection before each loop):

- ``inc``: ``counter.inc()`` on an instrument without labels;
- ``labels().inc`` bound: ``child.inc()`` where ``child = counter.labels("GET")`` was taken
  once, before the loop (the fast path both libraries recommend);
- ``labels("GET").inc()``: the series looked up on every call;
- ``observe``: ``histogram.observe(0.3)`` with prometheus_client's default buckets, without
  labels and through a bound labelled series.

prometheus_client's multiprocess mode keeps each value in a memory-mapped file under
``PROMETHEUS_MULTIPROC_DIR``; its metrics are built here with that mode's value class (what
``prometheus_client`` picks at import when the variable is set), in a temporary directory.

``@profile``: ``fn(1, "x")`` where ``fn`` returns its first argument, decorated with
``@jobtrace.profile`` or ``@phanos.profile`` (Phanos configured with ``job``, the time
profile on). Phanos measures nothing while it has no handler, so it is given a handler that
discards what it is handed; jobtrace always observes into its time histogram, and runs
twice: without handlers (its default) and with the same kind of discarding handler (each
root call's records queued for the handler thread). The ratios compare measuring with
measuring: Phanos with its discarding handler against each jobtrace case. Phanos without a
handler and the undecorated function are shown for information.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from _common import Verdicts, banner, format_table, interleave, median, parse_args

PROFILE_BUDGET_NS = 2000.0
MIN_PHANOS_RATIO = 5.0
MIN_PROM_RATIO = 1.0


def loop(fn: Callable[..., Any], args: tuple[Any, ...], n: int) -> float:
    """Nanoseconds per call of ``n`` calls ``fn(*args)``, after a full collection."""
    gc.collect()
    calls = range(n)
    start = time.perf_counter_ns()
    for _ in calls:
        fn(*args)
    return (time.perf_counter_ns() - start) / n


def loop_lookup(metric: Any, n: int, observe: bool = False) -> float:
    """Nanoseconds per ``metric.labels("GET").inc()`` (or ``.observe(0.3)``)."""
    gc.collect()
    calls = range(n)
    start = time.perf_counter_ns()
    if observe:
        for _ in calls:
            metric.labels("GET").observe(0.3)
    else:
        for _ in calls:
            metric.labels("GET").inc()
    return (time.perf_counter_ns() - start) / n


def work(a: int, b: str) -> int:
    """The function every @profile case runs."""
    return a


Cases = dict[str, Callable[[int], float]]


def instrument_cases(side: str, counter: Any, labelled: Any, hist: Any, hist_l: Any) -> Cases:
    child, hist_child = labelled.labels("GET"), hist_l.labels("GET")
    return {
        f"{side}: inc": lambda n: loop(counter.inc, (), n),
        f"{side}: labels().inc bound": lambda n: loop(child.inc, (), n),
        f'{side}: labels("GET").inc()': lambda n: loop_lookup(labelled, n),
        f"{side}: observe": lambda n: loop(hist.observe, (0.3,), n),
        f"{side}: labels().observe bound": lambda n: loop(hist_child.observe, (0.3,), n),
    }


def jobtrace_instruments() -> Cases:
    from jobtrace.instruments import Counter, Histogram, InstrumentRegistry

    registry = InstrumentRegistry()  # not the default: nothing is sent to a store
    return instrument_cases(
        "jobtrace",
        Counter("c", registry=registry),
        Counter("cl", labels=["method"], registry=registry),
        Histogram("h", registry=registry),
        Histogram("hl", labels=["method"], registry=registry),
    )


def prometheus_instruments(multiprocess_dir: str | None) -> Cases:
    import os

    import prometheus_client as prom
    from prometheus_client import values

    registry = prom.CollectorRegistry()
    saved = values.ValueClass
    if multiprocess_dir is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
        values.ValueClass = values.MultiProcessValue()  # what the import picks in that mode
    try:
        side = "prometheus_client multiprocess" if multiprocess_dir else "prometheus_client"
        return instrument_cases(
            side,
            prom.Counter("c", "c", registry=registry),
            prom.Counter("cl", "cl", ["method"], registry=registry),
            prom.Histogram("h", "h", registry=registry),
            prom.Histogram("hl", "hl", ["method"], registry=registry),
        )
    finally:
        values.ValueClass = saved
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def profile_cases() -> tuple[Cases, list[str]]:
    from jobtrace.instruments import InstrumentRegistry, Profiler
    from jobtrace.instruments.handlers import BaseHandler

    class Discard(BaseHandler):
        def handle(self, records: list[Any], profiler_name: str = "profiler") -> None:
            pass

    # Private registries: each profiler has its own time histogram, and nothing is sent
    # to a store (the default registry's series would be, every flush tick).
    plain = Profiler("bench-plain", registry=InstrumentRegistry())
    plain.config(job="bench")
    with_handler = Profiler("bench-handler", registry=InstrumentRegistry())
    with_handler.config(job="bench")
    with_handler.add_handler(Discard("discard"))
    profiled = plain.profile(work)
    handled = with_handler.profile(work)
    cases: Cases = {
        "jobtrace @profile": lambda n: loop(profiled, (1, "x"), n),
        "jobtrace @profile, discarding handler": lambda n: _then_flush(
            with_handler, loop(handled, (1, "x"), n)
        ),
        "undecorated call": lambda n: loop(work, (1, "x"), n),
    }
    notes = []
    try:
        from importlib.metadata import version

        import phanos
        from phanos.publisher import SyncBaseHandler
    except ImportError as exc:
        notes.append(f"note: Phanos not installed ({exc}); its comparisons are skipped")
        return cases, notes

    class PhanosDiscard(SyncBaseHandler):  # type: ignore[misc]
        def handle(self, records: Any, profiler_name: str = "profiler") -> None:
            pass

    phanos.profiler.config(job="bench", time_profile=True, handle_records=True)
    phanos_plain = phanos.profile(work)
    cases["Phanos @profile, no handler (measures nothing)"] = lambda n: loop(
        phanos_plain, (1, "x"), n
    )

    def with_phanos_handler(n: int) -> float:
        phanos.profiler.add_handler(PhanosDiscard("discard"))
        try:
            return loop(phanos_plain, (1, "x"), n)
        finally:
            phanos.profiler.delete_handler("discard")

    cases["Phanos @profile, discarding handler"] = with_phanos_handler
    notes.append(f"peer: phanos {version('phanos')}")
    return cases, notes


def _then_flush(profiler: Any, ns: float) -> float:
    profiler.flush()  # untimed: hand the queued records to the handler
    return ns


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 20_000 if args.quick else 200_000
    n_profile = 5_000 if args.quick else 30_000
    rounds = 5 if args.quick else 9
    banner(
        "bench_instruments: jobtrace instruments and @profile vs prometheus_client and Phanos",
        args.quick,
        [
            f"{rounds} rounds x {n:,} operations ({n_profile:,} profiled calls) per case",
            "GC on during loops, a full collection before each; nothing subtracted",
        ],
    )
    verdicts = Verdicts("bench_instruments")
    sizes: dict[str, int] = {}
    cases: Cases = {}
    cases.update(jobtrace_instruments())
    try:
        from importlib.metadata import version

        cases.update(prometheus_instruments(None))
        with tempfile.TemporaryDirectory(prefix="jt-bench-prom-") as tmp:
            cases.update(prometheus_instruments(tmp))
            print(f"peer: prometheus_client {version('prometheus_client')}")
            for label in cases:
                sizes[label] = n
            more, notes = profile_cases()
            for note in notes:
                print(note)
            for label in more:
                sizes[label] = n_profile
            cases.update(more)
            print()
            sys.stdout.flush()
            runners = {label: (lambda fn=fn, k=sizes[label]: fn(k)) for label, fn in cases.items()}
            interleave(runners, 1)  # warm-up: caches, first allocations, handler threads
            results = interleave(runners, rounds)
    except ImportError as exc:
        print(f"note: prometheus_client not installed ({exc}); pip install -e '.[bench]'")
        return verdicts.report(args.strict)

    ns = {label: median(values) for label, values in results.items()}
    rows = [
        [label, f"{ns[label]:.0f}", f"{min(results[label]):.0f}..{max(results[label]):.0f}"]
        for label in cases
    ]
    print(format_table(["case", "ns/op", "rounds min..max"], rows))

    ratio_rows = []
    ops = ("inc", "labels().inc bound", 'labels("GET").inc()', "observe", "labels().observe bound")
    for peer in ("prometheus_client", "prometheus_client multiprocess"):
        for op in ops:
            ratio = ns[f"{peer}: {op}"] / ns[f"jobtrace: {op}"]
            word = verdicts.check(
                f"{peer} / jobtrace, {op}", ratio > MIN_PROM_RATIO, f"{ratio:.1f}x (budget > 1x)"
            )
            ratio_rows.append([f"{peer} / jobtrace: {op}", f"{ratio:.1f}", word])
    own = "jobtrace @profile"
    word = verdicts.check(
        own, ns[own] <= PROFILE_BUDGET_NS, f"{ns[own]:.0f} ns/call (budget <= 2000 ns)"
    )
    ratio_rows.append([f"{own}: {ns[own]:.0f} ns/call", "-", word])
    peer = "Phanos @profile, discarding handler"
    if peer in ns:
        for mine in (own, "jobtrace @profile, discarding handler"):
            ratio = ns[peer] / ns[mine]
            word = verdicts.check(
                f"{peer} / {mine}", ratio >= MIN_PHANOS_RATIO, f"{ratio:.1f}x (budget >= 5x)"
            )
            ratio_rows.append([f"{peer} / {mine}", f"{ratio:.1f}", word])
    print()
    print(format_table(["peer / jobtrace", "ratio", "budget"], ratio_rows))
    plain = ns["undecorated call"]
    print(f"\n@profile overhead over the undecorated call: +{ns[own] - plain:.0f} ns (information)")
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
