"""Run every benchmark in sequence and summarise their budget verdicts.

    python bench/run_all.py            # full runs (about 3-4 minutes in all)
    python bench/run_all.py --quick    # short runs (about 20 s in all)
    python bench/run_all.py --strict   # exit 1 if any figure is over budget

Each script runs in its own interpreter, one after another (never in parallel: they would
disturb each other's timings), with ``--quick`` and ``--strict`` passed through.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _common import EXIT_OVER_BUDGET, format_table

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "bench_record.py",
    "bench_tracing.py",
    "bench_osprofiler_compat.py",
    "bench_instruments.py",
    "bench_compat_phanos.py",
    "bench_scrape.py",
    "bench_persist.py",
    "bench_otlp.py",
    "bench_limits.py",
    "bench_metrics.py",
    "bench_server.py",
    "bench_auth.py",
    "scaleout.py",
    "bench_dashboard.py",
    "bench_batch.py",
    "bench_soak.py",
    "bench_run_overhead.py",
    "bench_memory_profile.py",
    "bench_import.py",
    "profile_overhead.py",
)
RESULT_PREFIX = "RESULT "


def run(script: str, passthrough: list[str]) -> tuple[int, float, str]:
    """Run one script, echoing its output; (exit status, seconds, its RESULT line)."""
    print(f"\n##### {script} {' '.join(passthrough)}".rstrip(), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / script), *passthrough],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    result = ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith(RESULT_PREFIX):
            result = line[len(RESULT_PREFIX) :].strip()
    status = proc.wait()
    return status, time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description="Run every jobtrace benchmark in sequence.")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument("--strict", action="store_true", help="pass --strict to every script")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only scripts whose name contains NAME"
    )
    args = parser.parse_args()
    passthrough = [flag for flag, on in (("--quick", args.quick), ("--strict", args.strict)) if on]
    scripts = [s for s in SCRIPTS if not args.only or any(name in s for name in args.only)]

    rows = []
    exit_status = 0  # 0: all ran (and, with --strict, within budget); 1: over budget; 2: failed
    for script in scripts:
        status, seconds, result = run(script, passthrough)
        if status == 0:
            outcome = "ran"
        elif status == EXIT_OVER_BUDGET and args.strict:
            outcome = "over budget"
            exit_status = max(exit_status, 1)
        else:
            outcome = f"FAILED (exit {status})"
            exit_status = 2
        rows.append([script, f"{seconds:.1f}", outcome, result.split(": ", 1)[-1] or "-"])

    print("\n##### summary")
    print(format_table(["script", "seconds", "outcome", "verdict"], rows))
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
