"""Cost of a ``/metrics`` scrape of many processes' series, and whether it grows as workers
come and go: jobtrace vs prometheus_client's multiprocess mode.

Budgets: a scrape of 10,000 series (10 live processes x 1,000 series each) at most 100 ms;
and after 50 more processes ran and exited, a scrape at most 1.5x what it was before
(jobtrace folds dead sources away; prometheus_client's ``MultiProcessCollector`` reads every
file every process ever wrote, so its cost grows with each pid).

Both sides hold the same series: per process 600 counters (one label), 200 gauges (summed
across processes) and 200 histograms with prometheus_client's 15 default buckets.

- jobtrace: the series rows are written to a SQLite store (the ``series`` table, as the
  recorder writes them), with a heartbeat per process; a scrape is
  :func:`jobtrace.server.scrape.render_scrape` — read the rows, merge the sources, add the
  store-derived families, write the classic text format with prometheus_client's writer:
  everything ``GET /metrics`` does but the HTTP round trip. Churn: 50 more processes write
  the same series and a final heartbeat; :func:`retire_sources` folds them (what the
  server's background task does).
- prometheus_client: the same values in its multiprocess files (``counter_<pid>.db``,
  ``gauge_livesum_<pid>.db``, ``histogram_<pid>.db``) written with its own ``MmapedDict``
  in a temporary ``PROMETHEUS_MULTIPROC_DIR``; a scrape is ``generate_latest`` over a
  registry holding a ``MultiProcessCollector``. Churn: 50 more pids' files; each exited
  pid is marked dead with ``mark_process_dead`` (which removes live gauges only: counters
  and histograms of dead pids must be kept, or totals would fall).

The figures are medians over rounds; the two sides alternate within each round.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread

SCRAPE_BUDGET_MS = 100.0
GROWTH_BUDGET = 1.5
LIVE = 10
DEAD = 50
COUNTERS, GAUGES, HISTOGRAMS = 600, 200, 200
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def process_rows(source: str, index: int, now: float, *, final: bool) -> list[tuple[Any, ...]]:
    """One process's SERIES records: the bench's 1,000 series and its heartbeat."""
    from jobtrace import model
    from jobtrace.instruments.registry import SOURCE_SERIES

    rows: list[tuple[Any, ...]] = []
    for i in range(COUNTERS):
        rows.append((model.SERIES, source, None, "bench_requests", "counter", None,
                     f'{{"route":"r{i}"}}', float(index + i), {"created": 1.0}, now))  # fmt: skip
    for i in range(GAUGES):
        rows.append((model.SERIES, source, None, "bench_queue", "gauge", "sum",
                     f'{{"queue":"q{i}"}}', float(i), {}, now))  # fmt: skip
    bounds = [*BUCKETS, "inf"]
    for i in range(HISTOGRAMS):
        cum = [min(k, 10) + index for k in range(len(bounds))]
        data = {"le": bounds, "cum": cum, "created": 1.0}
        rows.append((model.SERIES, source, None, "bench_latency", "histogram", None,
                     f'{{"route":"r{i}"}}', 1.5, data, now))  # fmt: skip
    heartbeat = {"host": "bench", "pid": index, **({"final": True} if final else {})}
    rows.append((model.SERIES, source, None, SOURCE_SERIES, "source", None, "{}", now,
                 heartbeat, now))  # fmt: skip
    return rows


class JobtraceSide:
    def __init__(self, directory: Path) -> None:
        from jobtrace.server.scrape import ScrapeSettings
        from jobtrace.store import Store

        self.store = Store(f"sqlite:///{directory / 'scrape.db'}")
        self.settings = ScrapeSettings(retire_interval=0)
        now = time.time()
        for p in range(LIVE):
            self.store.write(process_rows(f"bench:{1000 + p}:1", p, now, final=False))

    def churn(self) -> None:
        from jobtrace.store.series import retire_sources

        now = time.time()
        for p in range(DEAD):
            self.store.write(process_rows(f"bench:{5000 + p}:1", LIVE + p, now, final=True))
        self.unfolded_ms = self.scrape() * 1e3  # for information: before the fold
        result = retire_sources(self.store.engine)
        assert len(result.sources) == DEAD, result

    def scrape(self) -> float:
        from jobtrace.server.scrape import render_scrape

        start = time.perf_counter()
        body, _ = render_scrape(self.store, settings=self.settings)
        elapsed = time.perf_counter() - start
        self.size = len(body)
        return elapsed

    def samples(self) -> int:
        from jobtrace.server.scrape import render_scrape

        body, _ = render_scrape(self.store, settings=self.settings)
        return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


class PrometheusSide:
    def __init__(self, directory: Path) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        for p in range(LIVE):
            self.write_pid(1000 + p, p)
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(directory))

    def write_pid(self, pid: int, index: int) -> None:
        from prometheus_client.mmap_dict import MmapedDict, mmap_key

        now = time.time()
        counters = MmapedDict(str(self.directory / f"counter_{pid}.db"))
        for i in range(COUNTERS):
            key = mmap_key("bench_requests", "bench_requests_total", ["route"], [f"r{i}"], "r")
            counters.write_value(key, float(index + i), now)
        counters.close()
        gauges = MmapedDict(str(self.directory / f"gauge_livesum_{pid}.db"))
        for i in range(GAUGES):
            key = mmap_key("bench_queue", "bench_queue", ["queue"], [f"q{i}"], "q")
            gauges.write_value(key, float(i), now)
        gauges.close()
        histograms = MmapedDict(str(self.directory / f"histogram_{pid}.db"))
        for i in range(HISTOGRAMS):
            labels = [f"r{i}"]
            previous = 0
            for k, bound in enumerate([*BUCKETS, float("inf")]):
                cumulative = min(k, 10) + index
                le = "+Inf" if bound == float("inf") else str(bound)
                key = mmap_key(
                    "bench_latency", "bench_latency_bucket", ["route", "le"], [*labels, le], "l"
                )
                histograms.write_value(key, float(cumulative - previous), now)
                previous = cumulative
            key = mmap_key("bench_latency", "bench_latency_sum", ["route"], labels, "l")
            histograms.write_value(key, 1.5, now)
        histograms.close()

    def churn(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        for p in range(DEAD):
            self.write_pid(5000 + p, LIVE + p)
            mark_process_dead(5000 + p, str(self.directory))

    def scrape(self) -> float:
        from prometheus_client import generate_latest

        start = time.perf_counter()
        body = generate_latest(self.registry)
        elapsed = time.perf_counter() - start
        self.size = len(body)
        return elapsed

    def samples(self) -> int:
        from prometheus_client import generate_latest

        body = generate_latest(self.registry)
        return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def measure(sides: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    gc.collect()
    return interleave({name: side.scrape for name, side in sides.items()}, rounds)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    verdicts = Verdicts("bench_scrape.py")
    rounds = 5 if args.quick else 15
    banner(
        "a /metrics scrape of many processes' series vs prometheus_client multiprocess",
        args.quick,
        [
            f"{LIVE} live processes x {COUNTERS + GAUGES + HISTOGRAMS} series "
            f"({COUNTERS} counters, {GAUGES} gauges, {HISTOGRAMS} histograms of "
            f"{len(BUCKETS) + 1} buckets); churn: {DEAD} more processes that ran and exited",
            "jobtrace: render_scrape on a SQLite store (read, merge, store families, text "
            "format); prometheus_client: generate_latest over a MultiProcessCollector",
        ],
    )
    gc.freeze()  # as a server does after start-up: the fixtures are not the scrape's cost
    with tempfile.TemporaryDirectory(prefix="jt-bench-scrape-") as tmp:
        root = Path(tmp)
        (root / "prom").mkdir()
        sides: dict[str, Any] = {
            "jobtrace": JobtraceSide(root),
            "prometheus_client multiprocess": PrometheusSide(root / "prom"),
        }
        counts = {name: side.samples() for name, side in sides.items()}
        before = measure(sides, rounds)
        for side in sides.values():
            side.churn()
        after = measure(sides, rounds)
        counts_after = {name: side.samples() for name, side in sides.items()}
        sizes = {name: side.size for name, side in sides.items()}

    rows = []
    results: dict[str, tuple[float, float]] = {}
    for name in sides:
        b, a = median(before[name]) * 1e3, median(after[name]) * 1e3
        results[name] = (b, a)
        rows.append([
            name, f"{counts[name]:,}", f"{b:.1f}", spread([x * 1e3 for x in before[name]]),
            f"{a:.1f}", spread([x * 1e3 for x in after[name]]), f"{a / b:.2f}x",
            f"{sizes[name] / 1e6:.2f}",
        ])  # fmt: skip
    headers = ["scrape", "samples", "before ms", "spread", f"after {DEAD} dead ms", "spread"]
    print(format_table([*headers, "growth", "MB"], rows))
    jt_before, jt_after = results["jobtrace"]
    pc_before, pc_after = results["prometheus_client multiprocess"]
    unfolded = sides["jobtrace"].unfolded_ms
    print()
    print(f"jobtrace before the fold, {DEAD} dead sources' rows still there: {unfolded:.1f} ms")
    print(f"prometheus_client / jobtrace: {pc_before / jt_before:.2f}x before churn, "
          f"{pc_after / jt_after:.2f}x after")  # fmt: skip
    assert counts_after["jobtrace"] == counts["jobtrace"], "the fold changed what is served"
    verdicts.check(
        f"scrape of {LIVE} x 1,000 series",
        jt_before <= SCRAPE_BUDGET_MS and jt_after <= SCRAPE_BUDGET_MS,
        f"{jt_before:.1f} ms before churn, {jt_after:.1f} ms after "
        f"(budget {SCRAPE_BUDGET_MS:.0f} ms)",
    )
    verdicts.check(
        "scrape does not grow as workers come and go",
        jt_after / jt_before <= GROWTH_BUDGET,
        f"{jt_after / jt_before:.2f}x after {DEAD} dead sources folded (budget "
        f"{GROWTH_BUDGET}x; prometheus_client multiprocess: {pc_after / pc_before:.2f}x)",
    )
    return verdicts.report(args.strict)


if __name__ == "__main__":
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    sys.exit(main())
