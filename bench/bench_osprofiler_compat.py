"""Cost of a point through the OSProfiler layer (``jobtrace.profiler``) vs OSProfiler itself.

A service that switches one import keeps calling OSProfiler's API, so the layer's own cost
is what it pays. Cases, each a loop of n points, for both libraries:

- ``Trace, initialised``: ``with profiler.Trace("x"): pass`` after ``profiler.init(key)``;
- ``@trace call, initialised``: a ``@profiler.trace("x")`` function called with two
  arguments (their ``repr`` recorded);
- ``Trace, not initialised``: the same loop without a profiler (both ignore the call).

jobtrace records into a sink that counts and discards records, as OSProfiler runs with its
no-op notifier (the default); its writer thread runs as in production. Budget: the layer
is no slower than OSProfiler in every case (OSProfiler / jobtrace >= 1).
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jobtrace
from _common import Verdicts, banner, format_table, interleave, median, parse_args
from jobtrace.sinks import register_sink

MIN_RATIO = 1.0
KEY = "bench-osprofiler-compat"
DISCARD_SCHEME = "bench-osp-discard"


class DiscardingSink:
    """Counts the records it is handed and keeps none."""

    received = 0

    def __init__(self, url: str) -> None:
        self.url = url

    def write(self, records: Sequence[Any]) -> None:
        DiscardingSink.received += len(records)

    def close(self) -> None:
        pass


register_sink(DISCARD_SCHEME, f"{__name__}:DiscardingSink")


def work(a: int, b: str) -> int:
    return a


def loop_trace(open_point: Callable[[str], Any], n: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        with open_point("x"):
            pass
    return (time.perf_counter_ns() - start) / n


def loop_calls(fn: Callable[[int, str], int], n: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        fn(1, "x")
    return (time.perf_counter_ns() - start) / n


def cases(n: int) -> dict[str, Callable[[], float]]:
    from osprofiler import notifier as osp_notifier
    from osprofiler import profiler as osp

    from jobtrace import profiler as jtp

    osp_notifier.set(lambda info, context=None: None)
    jt_traced = jtp.trace("x")(work)
    osp_traced = osp.trace("x")(work)

    def initialised(lib: Any, run: Callable[[], float]) -> Callable[[], float]:
        def case() -> float:
            lib.init(KEY)
            try:
                return run()
            finally:
                lib.clean()

        return case

    return {
        "jobtrace Trace, initialised": initialised(jtp, lambda: loop_trace(jtp.Trace, n)),
        "OSProfiler Trace, initialised": initialised(osp, lambda: loop_trace(osp.Trace, n)),
        "jobtrace @trace call, initialised": initialised(jtp, lambda: loop_calls(jt_traced, n)),
        "OSProfiler @trace call, initialised": initialised(osp, lambda: loop_calls(osp_traced, n)),
        "jobtrace Trace, not initialised": lambda: loop_trace(jtp.Trace, n),
        "OSProfiler Trace, not initialised": lambda: loop_trace(osp.Trace, n),
    }


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 5_000 if args.quick else 30_000
    rounds = 5 if args.quick else 9
    banner(
        "bench_osprofiler_compat: jobtrace's OSProfiler layer vs OSProfiler",
        args.quick,
        [f"{rounds} rounds x {n:,} points per case; jobtrace into a discarding sink"],
    )
    verdicts = Verdicts("bench_osprofiler_compat")
    try:
        from importlib.metadata import version

        print(f"peer: osprofiler {version('osprofiler')}\n")
    except Exception as exc:  # the peer is the point of this script
        print(f"OSProfiler is not installed ({exc}); pip install osprofiler")
        return verdicts.report(args.strict)
    with tempfile.TemporaryDirectory(prefix="jt-bench-osp-") as tmp:
        jobtrace.configure(
            url=f"{DISCARD_SCHEME}://",
            directory=Path(tmp),
            buffer_size=4 * n + 16,
            install_signal_handlers=False,
        )
        runners = cases(n)
        interleave(runners, 1)  # warm-up
        results = interleave(runners, rounds)
        jobtrace.flush()
    ns = {label: median(values) for label, values in results.items()}
    print(format_table(["case", "ns/point"], [[k, f"{v:.0f}"] for k, v in ns.items()]))
    print()
    for what in ("Trace, initialised", "@trace call, initialised", "Trace, not initialised"):
        ratio = ns[f"OSProfiler {what}"] / ns[f"jobtrace {what}"]
        verdicts.check(
            f"OSProfiler / jobtrace, {what}",
            ratio >= MIN_RATIO,
            f"{ratio:.1f}x (budget >= {MIN_RATIO:.0f}x)",
        )
    print(f"records received by the sink: {DiscardingSink.received:,}")
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
