"""``jobtrace run``'s cost: its fixed cost on an empty script, and its overhead on a
CPU-bound one, each against plain ``python`` running the same script.

Budgets: the fixed cost at most 50 ms over ``python empty.py``; on the CPU-bound script at
most 3% more wall time.

Every command runs as a subprocess, alternately with its peer, with the same environment
and working directory (a temporary directory that also holds the SQLite store and the job
reports). The store is created by an untimed warm-up run, so the timed runs find it
migrated, as every run but a machine's first does.

The fixed cost is what a job pays however short it is: starting up (importing jobtrace,
click and the SQLite writer), starting the job, and at the end writing the job's records
and report. It is measured on an empty script, as the median over rounds of each round's
difference (``jobtrace run empty.py`` minus ``python empty.py``), so a slow spell of the
shared machine that spans a round cancels out; then one ``-X importtime`` run shows which
imports it is made of. Three more figures are for information: the same into a store that
does not exist yet (a job's first run in a new directory), with 1,000 reports kept
already (the default JOBTRACE_REPORTS_KEEP, where a directory in use for a while stays),
and without bytecode files.

The CPU-bound script is a pure-Python loop, sized at start-up to take about 4 s here (0.3 s
with ``--quick``; skipped with ``--fixed-only``). Its difference includes the fixed cost,
so the script prints how it splits into fixed cost and cost while the script runs.
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
    load_note,
    median,
    parse_args,
    spread,
)
from bench_import import importtime_report

BUDGET = 0.03  # at most 3% more wall time on the CPU-bound script
FIXED_BUDGET_MS = 50.0  # at most 50 ms more than `python empty.py`

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


#: Report directories already there for the "reports kept" row: the default
#: JOBTRACE_REPORTS_KEEP, which a directory used for a while reaches and then stays at.
KEPT_REPORTS = 1000


def full_reports_env(directory: Path) -> dict[str, str]:
    """An environment whose JOBTRACE_DIR holds KEPT_REPORTS report directories already."""
    home = directory / "jt-full"
    for i in range(KEPT_REPORTS):
        report = home / "reports" / f"old-{i:05d}"
        report.mkdir(parents=True)
        (report / "report.json").write_text("{}")
    return clean_env(JOBTRACE_DIR=str(home))


#: Stands for a new store's URL in a NewStoreRunner's command.
NEW_STORE = "<new store>"


class NewStoreRunner(Runner):
    """Runs ``jobtrace run`` into a store file that does not exist yet, a new one per call:
    the first run in a new directory, a fresh CI container."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        super().__init__(argv, cwd, env)
        self.template = list(argv)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        url = f"sqlite:///{self.cwd / 'new-stores' / f'{self.calls}.db'}"
        self.argv = [url if arg == NEW_STORE else arg for arg in self.template]
        return super().__call__()


def paired(jobtrace: list[float], peer: list[float]) -> tuple[float, float]:
    """Median over rounds of (jobtrace - peer) and of jobtrace / peer, same round."""
    pairs = list(zip(jobtrace, peer, strict=True))
    return median([j - p for j, p in pairs]), median([j / p for j, p in pairs])


def main() -> int:
    args = parse_args(
        __doc__.splitlines()[0] if __doc__ else "",
        extra=lambda parser: parser.add_argument(
            "--fixed-only",
            action="store_true",
            help="measure the fixed cost (empty script) only, not the CPU-bound script",
        ),
    )
    # A few seconds: long enough that the per-run fixed cost (reported on its own below)
    # does not swamp what the budget is about, yet short for a batch job.
    target = 0.3 if args.quick else 4.0
    rounds = 3 if args.quick else 7
    # Empty runs are cheap and their differences small: more rounds for a steady median.
    fixed_rounds = 7 if args.quick else 21
    n = 0 if args.fixed_only else iterations_for(target)
    banner(
        "bench_run_overhead: jobtrace run vs python, empty and CPU-bound scripts",
        args.quick,
        [
            f"fixed cost: {fixed_rounds} rounds of `jobtrace run empty.py` and `python "
            "empty.py`, alternating; figures are medians of the rounds' paired differences",
            "CPU-bound: skipped (--fixed-only)"
            if args.fixed_only
            else f"CPU-bound: {rounds} rounds of each command, alternating; script loop of "
            f"{n:,} iterations (~{target:g} s here)",
            BYTECODE_NOTE.format(prefix=PYCACHE_PREFIX),
            load_note(),
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

        def jobtrace_argv(script: Path, *script_args: str, url: str = store) -> list[str]:
            return ["-m", "jobtrace", "run", "-q", "--store", url, str(script), *script_args]

        def jobtrace_cmd(script: Path, *script_args: str, url: str = store) -> list[str]:
            return [sys.executable, *jobtrace_argv(script, *script_args, url=url)]

        # The info-only pair compiles jobtrace from source at every start, as an editable
        # install does under PYTHONDONTWRITEBYTECODE=1 (no installed deployment does).
        env_nopyc = clean_env(
            bytecode_cache=False, PYTHONDONTWRITEBYTECODE="1", JOBTRACE_DIR=str(directory / "jt")
        )
        env_nopyc.pop("PYTHONPYCACHEPREFIX", None)
        empty = {
            "python-empty": Runner([sys.executable, str(empty_script)], directory, env),
            "jobtrace-empty": Runner(jobtrace_cmd(empty_script), directory, env),
            "jobtrace-empty-new": NewStoreRunner(
                jobtrace_cmd(empty_script, url=NEW_STORE), directory, env
            ),
            "jobtrace-empty-full": Runner(
                jobtrace_cmd(empty_script), directory, full_reports_env(directory)
            ),
            "python-empty-nopyc": Runner([sys.executable, str(empty_script)], directory, env_nopyc),
            "jobtrace-empty-nopyc": Runner(jobtrace_cmd(empty_script), directory, env_nopyc),
        }
        # Warm-up (untimed): creates and migrates the store, fills the bytecode cache and
        # the page cache. The empty scripts import everything the CPU-bound runs import.
        for runner in (*empty.values(), *empty.values()):
            runner()
        for runner in empty.values():
            runner.cpu.clear()
        fixed_results = interleave(dict(empty), fixed_rounds)
        cpu: dict[str, Runner] = {}
        cpu_results: dict[str, list[float]] = {}
        if not args.fixed_only:
            cpu = {
                "python": Runner([sys.executable, str(cpu_script), str(n)], directory, env),
                "jobtrace": Runner(jobtrace_cmd(cpu_script, str(n)), directory, env),
            }
            cpu_results = interleave(dict(cpu), rounds)
        reports = directory / "jt" / "reports"
        jobs_recorded = len(list(reports.iterdir())) if reports.is_dir() else 0

        print(f"-- fixed cost: empty script ({fixed_rounds} rounds) --")
        rows = []
        fixed: dict[str, tuple[float, float]] = {}
        for name, peer, label in (
            ("python-empty", None, "python empty.py (peer)"),
            ("jobtrace-empty", "python-empty", "jobtrace run empty.py"),
            ("jobtrace-empty-new", "python-empty", "jobtrace run empty.py, new store (info)"),
            (
                "jobtrace-empty-full",
                "python-empty",
                f"jobtrace run empty.py, {KEPT_REPORTS:,} reports kept (info)",
            ),
            ("python-empty-nopyc", None, "python empty.py, no .pyc (peer)"),
            ("jobtrace-empty-nopyc", "python-empty-nopyc", "jobtrace run empty.py, no .pyc (info)"),
        ):
            runs = fixed_results[name]
            cells = ["-", "1.00"]
            if peer is not None:
                diff, ratio = fixed[name] = paired(runs, fixed_results[peer])
                cells = [f"{diff * 1000:+.1f}", f"{ratio:.2f}"]
            rows.append(
                [
                    label,
                    f"{median(runs) * 1000:.1f}",
                    spread([v * 1000 for v in runs]),
                    f"{median(empty[name].cpu) * 1000:.1f}",
                    *cells,
                ]
            )
        print(
            format_table(
                ["command", "wall ms", "rounds min..max", "cpu ms", "paired diff ms", "ratio"],
                rows,
            )
        )
        fixed_ms, fixed_ratio = fixed["jobtrace-empty"][0] * 1000, fixed["jobtrace-empty"][1]
        print()
        importtime_report(
            directory, env, jobtrace_argv(empty_script), label="jobtrace run -q empty.py"
        )
        print()
        verdicts.check(
            "jobtrace run fixed cost",
            fixed_ms <= FIXED_BUDGET_MS,
            f"{fixed_ms:+.1f} ms over `python empty.py` (median of {fixed_rounds} paired rounds; "
            f"{fixed_ratio:.2f}x; budget <= {FIXED_BUDGET_MS:.0f} ms); into a new store "
            f"{fixed['jobtrace-empty-new'][0] * 1000:+.1f} ms, without .pyc files "
            f"{fixed['jobtrace-empty-nopyc'][0] * 1000:+.1f} ms",
        )
    if not args.fixed_only:
        cpu_bound_report(cpu, cpu_results, fixed_ms / 1000, verdicts)
    print(f"\njob reports written: {jobs_recorded} (one per jobtrace run, the warm-ups' included)")
    return verdicts.report(args.strict)


def cpu_bound_report(
    runners: dict[str, Runner],
    results: dict[str, list[float]],
    fixed: float,
    verdicts: Verdicts,
) -> None:
    """The CPU-bound pair's table, its split into fixed and running cost, and its verdict."""
    print(f"-- CPU-bound script ({len(results['python'])} rounds) --")
    py, jt = median(results["python"]), median(results["jobtrace"])
    overhead = jt / py - 1.0
    rows = []
    for key, label in (
        ("python", "python cpu_bound.py (peer)"),
        ("jobtrace", "jobtrace run cpu_bound.py"),
    ):
        wall = median(results[key])
        rows.append(
            [
                label,
                f"{wall:.3f}",
                spread(results[key]),
                f"{median(runners[key].cpu):.3f}",
                f"{wall - py:+.3f}",
                f"{wall / py:.3f}",
            ]
        )
    print(format_table(["command", "wall s", "rounds min..max", "cpu s", "diff s", "ratio"], rows))
    diff, _ = paired(results["jobtrace"], results["python"])
    best = min(results["jobtrace"]) / min(results["python"]) - 1.0
    noise = relative_iqr(results["python"])
    print(
        f"\nmedian paired difference (jobtrace - python, same round): {diff:+.3f} s "
        f"({diff / py * 100:+.1f}%); best run vs best run: {best * 100:+.1f}%"
        f"\nnoise: the peer's rounds have an interquartile range of {noise * 100:.1f}% of "
        f"their median"
        f"\nof the difference, fixed cost (empty script): {fixed * 1000:+.0f} ms; the rest "
        f"while the script runs: {(jt - py - fixed) * 1000:+.0f} ms"
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


if __name__ == "__main__":
    sys.exit(main())
