"""Cost of a profiled call through jobtrace.compat.phanos vs the Phanos library it replaces.

Budgets: with Phanos's hand-over order (``handle_inline=True``) a profiled call costs no
more than Phanos's own (Phanos / compat >= 1); with the default background hand-over and a
handler that takes 200 us (a RabbitMQ publish, a blocked stdout) a call is at least 2x
cheaper than Phanos's, which waits for its handlers (Phanos / compat >= 2).

Every case times ``for _ in range(n): fn(1, "x")`` where ``fn`` returns its first argument,
decorated by a profiler configured with ``job`` and the time profile, and given one handler:
a discarding one, or one sleeping 200 us per metric's records. The background case with a
discarding handler is printed for information: on a tight loop its handler thread competes
with the caller for the interpreter, which a service waiting on I/O does not notice. The
queued records are handed over (``flush()``) after each timed loop, untimed.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import Verdicts, banner, format_table, interleave, median, parse_args

SLOW_HANDLER_S = 0.0002
MIN_INLINE_RATIO = 1.0
MIN_SLOW_RATIO = 2.0


def loop(fn: Callable[..., Any], n: int) -> float:
    """Nanoseconds per call of ``n`` calls ``fn(1, "x")``, after a full collection."""
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(n):
        fn(1, "x")
    return (time.perf_counter_ns() - start) / n


def work(a: int, b: str) -> int:
    return a


def compat_cases() -> dict[str, Callable[[int], float]]:
    import jobtrace
    import jobtrace.compat.phanos as compat

    jobtrace.configure(url="memory://bench-compat-phanos")

    class Discard(compat.SyncBaseHandler):
        def handle(self, records: Any, profiler_name: str = "profiler") -> None:
            pass

    class Slow(compat.SyncBaseHandler):
        def handle(self, records: Any, profiler_name: str = "profiler") -> None:
            time.sleep(SLOW_HANDLER_S)

    def profiled(handler: Any, inline: bool) -> tuple[Any, Callable[..., Any]]:
        profiler = compat.Profiler()
        profiler.config(job="bench", error_raised_label=False, handle_inline=inline)
        profiler.add_handler(handler)
        return profiler, profiler.profile(work)

    def timed(profiler: Any, fn: Callable[..., Any]) -> Callable[[int], float]:
        def run(n: int) -> float:
            ns = loop(fn, n)
            profiler.flush(timeout=None)
            return ns

        return run

    return {
        "compat, discarding handler, inline": timed(*profiled(Discard("d"), True)),
        "compat, discarding handler, background": timed(*profiled(Discard("d"), False)),
        "compat, 200 us handler, background": timed(*profiled(Slow("s"), False)),
    }


def phanos_cases() -> dict[str, Callable[[int], float]]:
    from phanos.publisher import Profiler, SyncBaseHandler

    class Discard(SyncBaseHandler):  # type: ignore[misc]
        def handle(self, records: Any, profiler_name: str = "profiler") -> None:
            pass

    class Slow(SyncBaseHandler):  # type: ignore[misc]
        def handle(self, records: Any, profiler_name: str = "profiler") -> None:
            time.sleep(SLOW_HANDLER_S)

    def profiled(handler: Any) -> Callable[..., Any]:
        profiler = Profiler()
        profiler.config(job="bench", error_raised_label=False)
        profiler.add_handler(handler)
        return profiler.profile(work)

    plain, slow = profiled(Discard("d")), profiled(Slow("s"))
    return {
        "Phanos, discarding handler": lambda n: loop(plain, n),
        "Phanos, 200 us handler": lambda n: loop(slow, n),
    }


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 2_000 if args.quick else 20_000
    n_slow = 200 if args.quick else 1_000
    rounds = 3 if args.quick else 7
    banner(
        "bench_compat_phanos: jobtrace.compat.phanos vs Phanos, one profiled call",
        args.quick,
        [f"{rounds} rounds x {n:,} calls ({n_slow:,} with the 200 us handler) per case"],
    )
    verdicts = Verdicts("bench_compat_phanos")
    try:
        from importlib.metadata import version

        peer = phanos_cases()
        print(f"peer: phanos {version('phanos')}")
    except ImportError as exc:
        print(f"note: Phanos not installed ({exc}); pip install -e '.[bench]'")
        return verdicts.report(args.strict)
    cases = {**compat_cases(), **peer}
    sizes = {label: n_slow if "200 us" in label else n for label in cases}
    runners = {label: (lambda fn=fn, k=sizes[label]: fn(k)) for label, fn in cases.items()}
    interleave(runners, 1)  # warm-up: caches, series, the handler thread
    results = interleave(runners, rounds)
    ns = {label: median(values) for label, values in results.items()}
    print(format_table(["case", "us/call"], [[k, f"{v / 1000:.1f}"] for k, v in ns.items()]))
    print()
    pairs = (
        ("Phanos, discarding handler", "compat, discarding handler, inline", MIN_INLINE_RATIO),
        ("Phanos, 200 us handler", "compat, 200 us handler, background", MIN_SLOW_RATIO),
    )
    rows = []
    for theirs, ours, budget in pairs:
        ratio = ns[theirs] / ns[ours]
        word = verdicts.check(
            f"{theirs} / {ours}", ratio >= budget, f"{ratio:.2f}x (budget >= {budget:g}x)"
        )
        rows.append([f"{theirs} / {ours}", f"{ratio:.2f}", word])
    info = ns["Phanos, discarding handler"] / ns["compat, discarding handler, background"]
    rows.append(["Phanos / compat background, discarding handler", f"{info:.2f}", "info"])
    print(format_table(["ratio", "x", "verdict"], rows))
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
