"""Soak: ten million records through the recorder, RSS printed as it goes; it must stay flat.

An hour of a busy job compressed into a loop: every iteration logs a metric point, opens and
closes a root span and records a batch file (three records), inside one job and one batch,
into a sink that counts what it receives and keeps nothing (``count://``, from
``tests/counting_sink.py``), so what grows is jobtrace's own memory. The loop flushes every
half buffer, as the writer does for a job producing at a rate it keeps up with, so nothing
is dropped and every record is accounted for at the end (sent == received per kind).

RSS is read from ``/proc/self/statm`` after a warm-up (the first 10 %), then every 10 %, and
the growth from the warm-up to the end is checked against a budget of 8 MiB (without the
streaming batch aggregates, the batch alone grew ~270 MiB per million files). Run with
``--records N`` for another size; ``tests/test_soak.py`` runs this script with 1,000,000
records (50x its 20,000-record buffer) and checks the same figures.

    PYTHONPATH=src python bench/bench_soak.py              # 10,000,000 records
    PYTHONPATH=src python bench/bench_soak.py --quick      # 1,000,000 records
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.counting_sink

from tests.counting_sink import rss_kb, use_counting_sink

import jobtrace
from _common import Verdicts
from jobtrace.model import ITEM, METRIC, SPAN

GROWTH_BUDGET_MIB = 8.0
BUFFER = 20_000
KINDS = (METRIC, SPAN, ITEM)


def soak(records: int, buffer: int = BUFFER) -> dict[str, float]:
    """Send ``records`` records (a third of each kind); return the RSS figures and counts."""
    sink = use_counting_sink("soak", buffer_size=buffer)
    iterations = records // len(KINDS)
    flush_every = max(1, buffer // (2 * len(KINDS)))
    tenth = max(1, iterations // 10)
    samples: list[tuple[int, int]] = []
    start = time.perf_counter()
    with jobtrace.job("soak", report=False), jobtrace.BatchMetrics(name="soak-batch") as batch:
        log_metric, trace, record_file = jobtrace.log_metric, jobtrace.Trace, batch.record_file
        for i in range(iterations):
            log_metric("loss", 0.5, step=i)
            with trace("step"):
                pass
            record_file("data/file.wfm", duration=0.25, samples=10)
            if i % flush_every == flush_every - 1:
                jobtrace.flush()
            if i % tenth == tenth - 1:
                samples.append(((i + 1) * len(KINDS), rss_kb()))
                print(f"  {samples[-1][0]:>12,} records  RSS {samples[-1][1] / 1024:8.1f} MiB")
                sys.stdout.flush()
        summary = batch.summary()
    jobtrace.flush()
    elapsed = time.perf_counter() - start
    warm = samples[0][1]
    return {
        "records": float(iterations * len(KINDS)),
        "seconds": elapsed,
        "warm_mib": warm / 1024,
        "end_mib": samples[-1][1] / 1024,
        "max_growth_mib": (max(kb for _, kb in samples) - warm) / 1024,
        "growth_mib": (samples[-1][1] - warm) / 1024,
        "batch_files": float(summary.total_files),
        **{f"received_{kind}": float(sink.counts[kind]) for kind in KINDS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000,000 records")
    parser.add_argument("--records", type=int, help="records to send (default 10,000,000)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when over budget")
    args = parser.parse_args()
    records = args.records or (1_000_000 if args.quick else 10_000_000)
    print(f"== soak: {records:,} records through the recorder, RSS flat ==")
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}; RSS every 10 %:")
    result = soak(records)
    sent = int(result["records"]) // len(KINDS)
    print(
        f"\n{int(result['records']):,} records in {result['seconds']:.1f} s "
        f"({result['records'] / result['seconds']:,.0f} records/s); RSS after warm-up "
        f"{result['warm_mib']:.1f} MiB, at the end {result['end_mib']:.1f} MiB"
    )
    verdicts = Verdicts("bench_soak.py")
    verdicts.check(
        "RSS growth after warm-up",
        result["max_growth_mib"] <= GROWTH_BUDGET_MIB,
        f"{result['growth_mib']:+.2f} MiB at the end, {result['max_growth_mib']:+.2f} MiB at "
        f"most (budget <= {GROWTH_BUDGET_MIB:.0f} MiB)",
    )
    received = {kind: int(result[f"received_{kind}"]) for kind in KINDS}
    verdicts.check(
        "records received",
        all(n == sent for n in received.values()) and result["batch_files"] == sent,
        f"{sent:,} sent per kind; received {received}",
    )
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
