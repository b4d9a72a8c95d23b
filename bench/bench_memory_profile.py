"""Cost of the peak-memory profile: a job's workloads plain, in a job with the approximate
(default) and the exact memory mode, and under memray.

Budget: the approximate mode at most 3 % over plain on every workload. The exact mode's
figure beside memray's is printed for context; ``profile_overhead.py`` judges "no slower
than memray", on whole runs of ``jobtrace run --memory exact`` and ``memray run``, against
a noise floor it measures in the same rounds.

Four workloads, each a fraction of a second: *call-heavy* pure Python (small functions,
small ints), *numpy* (arithmetic on 1M-element arrays, a temporary per operation),
*allocation-heavy* (lists of dicts, tuples and strings built and dropped) and a *thread
pool* (4 threads running a mix). Each runs in this process as

- ``plain``: the bare function;
- ``job-off``: inside ``jobtrace.job(memory="off")`` (the job's own cost, for context);
- ``approximate``: inside ``jobtrace.job(memory="approximate")``, the default;
- ``exact``: inside ``jobtrace.job(memory="exact")`` (memray underneath, aggregated capture);
- ``memray``: inside ``memray.Tracker(file)``, as ``memray run`` records by default.

Every round runs every case of a workload in rotating order; a case's figure is the median
over rounds of its time divided by the same round's ``plain`` time. Times are this
process's CPU time (all its threads, jobtrace's included): on machines shared by several
busy users wall time swings by tens of percent from one second to the next, CPU time far
less, and a profiler's cost is CPU work. Jobs record to ``memory://`` and write no report,
so the figures are the profiling alone.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import jobtrace
from _common import Verdicts, banner, format_table, median, parse_args, rotated, stopwatch

BUDGET = 0.03


def call_heavy(n: int) -> int:
    def step(x: int) -> int:
        return (x * 31 + 7) % 1_000_003

    total = 0
    for i in range(n * 400_000):
        total += step(i)
    return total


def numpy_work(n: int) -> float:
    import numpy as np

    a = np.arange(1_000_000, dtype=np.float64)
    total = 0.0
    for _ in range(n * 12):
        b = a * 1.5 + 2.0
        c = np.sqrt(b) - a / 3.0
        total += float(c.sum())
    return total


def allocation_heavy(n: int) -> int:
    count = 0
    for _ in range(n * 10):
        rows = [{"id": i, "name": f"item-{i}", "pair": (i, i + 1)} for i in range(20_000)]
        count += len(rows)
        del rows
    return count


def thread_pool(n: int) -> int:
    def task(i: int) -> int:
        rows = [(j, str(j)) for j in range(4_000)]
        return len(rows) + sum(j % 7 for j in range(20_000)) + i

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(task, range(n * 40)))


WORKLOADS: dict[str, Callable[[int], Any]] = {
    "call-heavy": call_heavy,
    "numpy": numpy_work,
    "allocation-heavy": allocation_heavy,
    "thread-pool": thread_pool,
}


class MemrayCase:
    """``memray.Tracker`` around the call, writing to a fresh file each time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self) -> AbstractContextManager[Any]:
        import memray

        self.count += 1
        return memray.Tracker(self.directory / f"capture-{self.count}.bin")


def main() -> int:
    args = parse_args(__doc__ or "")
    size, rounds = (1, 5) if args.quick else (3, 15)
    banner(
        "peak-memory profile overhead",
        args.quick,
        ["jobs record to memory:// without a report; the sampler thread is not part of this"],
    )
    jobtrace.configure(url="memory://bench-memory", install_signal_handlers=False)
    try:
        import memray  # noqa: F401

        have_memray = True
    except ImportError:
        have_memray = False
        print("memray is not installed: the exact mode and the memray peer are skipped")

    with tempfile.TemporaryDirectory() as tmp:
        contexts: dict[str, Callable[[], AbstractContextManager[Any]]] = {
            "plain": nullcontext,
            "job-off": lambda: jobtrace.job("bench", memory="off", report=False),
            "approximate": lambda: jobtrace.job("bench", memory="approximate", report=False),
        }
        if have_memray:
            contexts["exact"] = lambda: jobtrace.job("bench", memory="exact", report=False)
            contexts["memray"] = MemrayCase(Path(tmp))

        verdicts = Verdicts("bench_memory_profile.py")
        rows = []
        with stopwatch("the benchmark"):
            for name, work in WORKLOADS.items():
                for context in contexts.values():  # warm-up, untimed: imports, caches
                    with context():
                        work(size)
                ratios: dict[str, list[float]] = {case: [] for case in contexts if case != "plain"}
                plains: list[float] = []
                for index in range(rounds):
                    times: dict[str, float] = {}
                    for case in rotated(list(contexts), index):
                        gc.collect()
                        with contexts[case]():
                            start = time.process_time()
                            work(size)
                            times[case] = time.process_time() - start
                    plains.append(times["plain"])
                    for case, values in ratios.items():
                        values.append(times[case] / times["plain"])
                    jobtrace.flush()
                figures = {case: median(values) for case, values in ratios.items()}
                approx_ok = figures["approximate"] <= 1 + BUDGET
                cells = [
                    name,
                    f"{median(plains) * 1000:.0f} ms cpu",
                    *(f"{figures[c]:.3f}" for c in ratios),
                    verdicts.check(
                        f"{name}: approximate mode",
                        approx_ok,
                        f"{figures['approximate']:.3f}x plain (budget {1 + BUDGET:.2f}x)",
                    ),
                ]
                if have_memray:
                    cells.append(f"{figures['exact'] / figures['memray']:.3f}x")
                rows.append(cells)
                sys.stdout.flush()

    headers = ["workload", "plain", *(f"{c} / plain" for c in contexts if c != "plain")]
    headers.append("approximate")
    if have_memray:
        headers.append("exact / memray (context)")
    print(format_table(headers, rows))
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
