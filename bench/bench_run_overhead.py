"""Wall time of ``jobtrace run script.py`` vs ``python script.py`` on a CPU-bound script.

Budget: at most 3% more wall time than plain ``python``.

The script is a pure-Python loop, sized at start-up to take about 4 s here (0.3 s with
``--quick``). Both commands run as subprocesses, alternately, several rounds each, with the
same environment and working directory (a temporary directory that also holds the SQLite
store and the job reports). The store is created by an untimed warm-up run, so the timed
runs find it migrated, as every run but a machine's first does.

The comparison includes jobtrace's fixed start-up and shut-down cost (importing jobtrace,
click and SQLAlchemy, opening the store, writing the job's records and report). A second
pair of runs on an empty script measures that fixed cost alone, so the difference on the
CPU-bound script splits into fixed cost and cost while the script runs.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BYTECODE_NOTE,
    PYCACHE_PREFIX,
    Verdicts,
    banner,
    clean_env,
    format_table,
    interleave,
    median,
    parse_args,
    spread,
)

BUDGET = 0.03  # at most 3% more wall time

CPU_SCRIPT = '''\
"""CPU-bound work for bench_run_overhead: a pure-Python loop of argv[1] iterations."""
import sys


def work(n: int) -> int:
    total = 0
    for i in range(n):
        total += (i * i) % 7
    return total


if __name__ == "__main__":
    work(int(sys.argv[1]))
'''

EMPTY_SCRIPT = '"""Does nothing: measures start-up and shut-down alone."""\n'


def relative_iqr(values: list[float]) -> float:
    """Interquartile range over median: how much the rounds of one command disagree."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / median(values)


def work(n: int) -> int:
    """The same loop as the script's, to size it in this process."""
    total = 0
    for i in range(n):
        total += (i * i) % 7
    return total


def iterations_for(seconds: float) -> int:
    """Loop iterations that take about ``seconds`` here (best of three probes)."""
    probe = 300_000
    best = min(_timed(probe) for _ in range(3))
    return max(probe, int(probe * seconds / best))


def _timed(n: int) -> float:
    start = time.perf_counter()
    work(n)
    return time.perf_counter() - start


class Runner:
    """Runs one command and returns its wall time, keeping the children's CPU time too."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.cpu: list[float] = []

    def __call__(self) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.argv)} exited with {proc.returncode}:\n"
                + proc.stderr.decode(errors="replace")
            )
        self.cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        return wall


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    # A few seconds: long enough that the per-run fixed cost (reported on its own below)
    # does not swamp what the budget is about, yet short for a batch job.
    target = 0.3 if args.quick else 4.0
    rounds = 3 if args.quick else 7
    n = iterations_for(target)
    banner(
        "bench_run_overhead: jobtrace run vs python on a CPU-bound script",
        args.quick,
        [
            f"{rounds} rounds of each command, alternating; script loop of {n:,} iterations "
            f"(~{target:g} s here)",
            "jobtrace's fixed start-up cost (importing jobtrace, click, SQLAlchemy; opening "
            "the store) is included in the comparison",
            BYTECODE_NOTE.format(prefix=PYCACHE_PREFIX),
        ],
    )
    verdicts = Verdicts("bench_run_overhead")

    with tempfile.TemporaryDirectory(prefix="jt-bench-run-") as tmp:
        directory = Path(tmp)
        cpu_script = directory / "cpu_bound.py"
        cpu_script.write_text(CPU_SCRIPT)
        empty_script = directory / "empty.py"
        empty_script.write_text(EMPTY_SCRIPT)
        env = clean_env(JOBTRACE_DIR=str(directory / "jt"))
        store = f"sqlite:///{directory / 'b.db'}"

        def jobtrace_cmd(script: Path, *script_args: str) -> list[str]:
            return [
                sys.executable,
                "-m",
                "jobtrace",
                "run",
                "-q",
                "--store",
                store,
                str(script),
                *script_args,
            ]

        runners = {
            "python": Runner([sys.executable, str(cpu_script), str(n)], directory, env),
            "jobtrace": Runner(jobtrace_cmd(cpu_script, str(n)), directory, env),
            "python-empty": Runner([sys.executable, str(empty_script)], directory, env),
            "jobtrace-empty": Runner(jobtrace_cmd(empty_script), directory, env),
        }
        # Warm-up (untimed): creates and migrates the store, fills the bytecode cache and
        # the page cache. The empty scripts import everything the CPU-bound runs import.
        for key in ("python-empty", "jobtrace-empty"):
            runners[key]()
            runners[key].cpu.clear()
        results = interleave(dict(runners), rounds)
        reports = directory / "jt" / "reports"
        jobs_recorded = len(list(reports.iterdir())) if reports.is_dir() else 0

    py, jt = median(results["python"]), median(results["jobtrace"])
    py0, jt0 = median(results["python-empty"]), median(results["jobtrace-empty"])
    overhead = jt / py - 1.0
    fixed = jt0 - py0
    rows = []
    for key, label in (
        ("python", "python cpu_bound.py (peer)"),
        ("jobtrace", "jobtrace run cpu_bound.py"),
        ("python-empty", "python empty.py"),
        ("jobtrace-empty", "jobtrace run empty.py"),
    ):
        wall = median(results[key])
        peer = py if key in {"python", "jobtrace"} else py0
        rows.append(
            [
                label,
                f"{wall:.3f}",
                spread(results[key]),
                f"{median(runners[key].cpu):.3f}",
                f"{wall - peer:+.3f}",
                f"{wall / peer:.3f}",
            ]
        )
    print(format_table(["command", "wall s", "rounds min..max", "cpu s", "diff s", "ratio"], rows))
    paired = median([j - p for j, p in zip(results["jobtrace"], results["python"], strict=True)])
    best = min(results["jobtrace"]) / min(results["python"]) - 1.0
    noise = relative_iqr(results["python"])
    print(
        f"\nmedian paired difference (jobtrace - python, same round): {paired:+.3f} s "
        f"({paired / py * 100:+.1f}%); best run vs best run: {best * 100:+.1f}%"
        f"\nnoise: the peer's rounds have an interquartile range of {noise * 100:.1f}% of "
        f"their median"
        f"\nfixed cost (empty script): {fixed * 1000:+.0f} ms; the rest while the script runs: "
        f"{(jt - py - fixed) * 1000:+.0f} ms"
        f"\njob reports written: {jobs_recorded} (one per jobtrace run, the warm-up's included)"
    )
    if fixed > 0:
        print(
            f"with this fixed cost, only scripts running at least {fixed / BUDGET:.1f} s "
            f"stay within +{BUDGET * 100:.0f}%"
        )
    if noise > BUDGET:
        print(
            f"the noise exceeds the {BUDGET * 100:.0f}% budget: treat this run's verdict as "
            "indicative and compare the paired and best-run figures, or re-run"
        )
    verdicts.check(
        "jobtrace run wall time over python",
        overhead <= BUDGET,
        f"{overhead * 100:+.1f}% ({jt - py:+.3f} s on {py:.2f} s; budget <= +{BUDGET * 100:.0f}%), "
        f"of which {fixed * 1000:.0f} ms is fixed start-up/shut-down cost",
    )
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
