"""What profiling costs a running job: jobtrace's default mode against other profilers.

Budget: jobtrace's default mode (``jobtrace run``: wall and CPU sampling at 100 Hz, the
timeline, and whatever memory tracking the default mode has) at most 3 % slower than plain
``python`` on every workload; its exact-memory mode (``--memory exact``) no slower than
memray.

Four workloads, each a script that times its own work (so start-up and shut-down, which
``bench_run_overhead.py`` and ``bench_import.py`` measure, are left out): call-heavy pure
Python, numpy, allocation-heavy, and a thread pool. Each runs as a subprocess

- plain: ``python work.py``
- jobtrace: ``python -m jobtrace run work.py`` (SQLite store, report written)
- jobtrace --memory exact: the same with ``--memory exact`` (n/a when this jobtrace has no
  such option)
- pyinstrument: ``python -m pyinstrument work.py`` (its default 1 ms interval)
- py-spy: ``py-spy record --rate 100 -- python work.py`` (n/a when it may not trace)
- memray: ``python -m memray run work.py``

Every round runs every (workload, mode) pair once, modes in rotating order; a pair's figure
is the median over rounds of its time divided by the same round's plain time. The figure
judged is the CPU time of the job's process (all its threads, the sampler's included): on
these shared two-core machines other users' load moves wall times by more than the 3 %
budget from one run to the next, while CPU time stays put. Wall-time ratios are printed too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import (
    Verdicts,
    banner,
    clean_env,
    format_table,
    median,
    parse_args,
    rotated,
    stopwatch,
)

BUDGET = 1.03  # the default mode: at most 3 % slower than plain python
AGAIN = "plain again"  # the same command as plain, in the same rounds: the noise floor
#: One BLAS thread in every mode: idle BLAS threads spinning would drown the CPU figures.
SINGLE_THREADED_BLAS = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Every workload: `python work.py OUT SCALE` does SCALE units of work and writes what the
# work took to OUT: [wall seconds, CPU seconds of the whole process (all its threads)].
PRELUDE = """\
import json
import sys
import time


def timed(work):
    out, scale = sys.argv[1], int(sys.argv[2])
    # Past start-up in every mode: jobtrace's recorder opens its store at its first flush
    # (1 s in), a one-time cost that bench_run_overhead.py counts; this measures the job.
    time.sleep(1.5)
    wall, cpu = time.perf_counter(), time.process_time()
    work(scale)
    took = [time.perf_counter() - wall, time.process_time() - cpu]
    with open(out, "w") as handle:
        json.dump(took, handle)
"""

WORKLOADS = {
    "call-heavy": """
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def work(scale):
    for _ in range(scale):
        fib(18)


if __name__ == "__main__":
    timed(work)
""",
    "numpy": """
import numpy as np


def work(scale):
    rng = np.random.default_rng(0)
    a = rng.random((200, 200))
    for _ in range(scale):
        b = a @ a
        np.sort(b, axis=None)
        a = b / b.max()


if __name__ == "__main__":
    timed(work)
""",
    "allocation": """
def work(scale):
    for _ in range(scale):
        rows = [{"id": i, "name": str(i), "tags": [i, i + 1]} for i in range(2000)]
        blobs = [bytes(64 + i % 512) for i in range(2000)]
        del rows, blobs


if __name__ == "__main__":
    timed(work)
""",
    "thread pool": """
from concurrent.futures import ThreadPoolExecutor


def task(n):
    total = 0
    for i in range(n):
        total += i % 7
    return total


def work(scale):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(task, [20000] * (scale * 4)))


if __name__ == "__main__":
    timed(work)
""",
}


def _help_has(option: str) -> bool:
    run_help = subprocess.run(
        [sys.executable, "-m", "jobtrace", "run", "--help"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    return option in run_help.stdout


def _py_spy_problem(workdir: Path) -> str | None:
    """None when py-spy can record a Python process here, else why not."""
    exe = shutil.which("py-spy")
    if exe is None:
        return "py-spy is not installed (pip install py-spy)"
    probe = subprocess.run(
        [
            *(exe, "record", "--rate", "100", "-o", str(workdir / "probe.txt")),
            *("--format", "raw", "--", sys.executable, "-c", "sum(range(10**6))"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {probe.returncode}"
    return None


def _module_problem(module: str) -> str | None:
    found = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        env=clean_env(),
        check=False,
    )
    return None if found.returncode == 0 else f"{module} is not installed"


Command = Callable[[Path, Path, int], list[str]]


def modes(workdir: Path) -> tuple[dict[str, Command], dict[str, str]]:
    """The commands that run a workload, by mode, and the modes that cannot run (why)."""
    store = f"sqlite:///{workdir / 'jobtrace.db'}"
    py = sys.executable
    runnable: dict[str, Command] = {
        "plain": lambda script, out, scale: [py, str(script), str(out), str(scale)],
        # plain once more: how far two runs of the same thing differ here (the noise floor).
        AGAIN: lambda script, out, scale: [py, str(script), str(out), str(scale)],
        "jobtrace": lambda script, out, scale: [
            *(py, "-m", "jobtrace", "run", "-q", "--store", store),
            *(str(script), str(out), str(scale)),
        ],
        # What the job costs without its profile: the difference is the sampler's.
        "jobtrace --no-profile": lambda script, out, scale: [
            *(py, "-m", "jobtrace", "run", "-q", "--no-profile", "--store", store),
            *(str(script), str(out), str(scale)),
        ],
    }
    missing: dict[str, str] = {}
    if _help_has("--memory"):
        runnable["jobtrace --memory exact"] = lambda script, out, scale: [
            *(py, "-m", "jobtrace", "run", "-q", "--memory", "exact", "--store", store),
            *(str(script), str(out), str(scale)),
        ]
    else:
        missing["jobtrace --memory exact"] = "this jobtrace has no `run --memory exact` yet"
    problem = _module_problem("pyinstrument")
    if problem is None:
        runnable["pyinstrument"] = lambda script, out, scale: [
            *(py, "-m", "pyinstrument", "-o", str(workdir / "pyinstrument.txt")),
            *(str(script), str(out), str(scale)),
        ]
    else:
        missing["pyinstrument"] = problem
    problem = _py_spy_problem(workdir)
    if problem is None:
        exe = shutil.which("py-spy") or "py-spy"
        runnable["py-spy"] = lambda script, out, scale: [
            *(exe, "record", "--rate", "100", "--format", "raw"),
            *("-o", str(workdir / "py-spy.txt"), "--", py, str(script), str(out), str(scale)),
        ]
    else:
        missing["py-spy"] = problem
    problem = _module_problem("memray")
    if problem is None:
        runnable["memray"] = lambda script, out, scale: [
            *(py, "-m", "memray", "run", "-q", "-f", "-o", str(workdir / "memray.bin")),
            *(str(script), str(out), str(scale)),
        ]
    else:
        missing["memray"] = problem
    return runnable, missing


def noise_floor(again: list[float]) -> float:
    """How far apart two runs of the same command typically are here: the median distance
    from 1 of plain-again's per-round ratios to plain."""
    return median([abs(ratio - 1) for ratio in again])


def run_once(command: list[str], out: Path, workdir: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the workload's own work under ``command``."""
    out.unlink(missing_ok=True)
    done = subprocess.run(
        command,
        cwd=workdir,
        env=clean_env(**SINGLE_THREADED_BLAS),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    wall, cpu = json.loads(out.read_text())
    return float(wall), float(cpu)


def calibrate(script: Path, out: Path, workdir: Path, target: float) -> int:
    """The scale at which the plain workload takes about ``target`` seconds of CPU time."""
    scale = 1
    while True:
        _, took = run_once([sys.executable, str(script), str(out), str(scale)], out, workdir)
        if took >= target / 4 or scale > 10**7:
            return max(1, round(scale * target / max(took, 1e-6)))
        scale *= 4


def sampler_alone(body: str, scale: int, pairs: int) -> float:
    """The sampler's own cost, in this process: the median over ``pairs`` of the CPU time
    of a block of work with a 100 Hz sampler running over the same block without one.

    Blocks a fraction of a second long, back to back, see the same machine load, so this
    figure stays steady where whole runs of separate processes drift by several percent.
    """
    import time

    from jobtrace.profiles.sampler import ProfileSession

    namespace: dict[str, object] = {"__name__": "workload"}
    exec(compile(PRELUDE + body, "<workload>", "exec"), namespace)
    work = namespace["work"]
    assert callable(work)
    block = max(1, scale // 5)

    def once() -> float:
        started = time.process_time()
        work(block)
        return time.process_time() - started

    ratios = []
    for index in range(pairs):
        session = ProfileSession("bench", 100, record=lambda record: None)
        if index % 2:  # alternate which of the pair runs first
            bare = once()
            session.begin()
            sampled = once()
            session.finish()
        else:
            session.begin()
            sampled = once()
            session.finish()
            bare = once()
        ratios.append(sampled / bare)
    return median(ratios)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    # For the in-process figure too (numpy reads these when sampler_alone first imports it).
    os.environ.update(SINGLE_THREADED_BLAS)
    rounds, target = (2, 0.3) if args.quick else (7, 1.0)
    banner(
        "Profiling overhead by workload (ratio to plain python)",
        args.quick,
        [
            f"each workload's own work timed inside the script (~{target} s of CPU plain), "
            "from 1.5 s after start to its end: start-up and shut-down excluded",
            f"{rounds} rounds; per round, each mode's time / plain's; median over rounds",
        ],
    )
    verdicts = Verdicts("profile_overhead.py")
    with tempfile.TemporaryDirectory(prefix="jobtrace-profile-bench-") as tmp:
        workdir = Path(tmp)
        commands, missing = modes(workdir)
        names = list(commands)
        # (workload, mode) -> per-round ratios to plain, of CPU time and of wall time.
        ratios: dict[tuple[str, str], list[float]] = {}
        wall_ratios: dict[tuple[str, str], list[float]] = {}
        plain_times: dict[str, list[float]] = {}
        alone: dict[str, float] = {}
        with stopwatch("the benchmark"):
            for workload, body in WORKLOADS.items():
                # work_*.py: a script called numpy.py would shadow numpy itself.
                script = workdir / f"work_{workload.replace(' ', '_')}.py"
                script.write_text(PRELUDE + body)
                out = workdir / "took.json"
                scale = calibrate(script, out, workdir, target)
                # Warm-up: bytecode caches, the store's schema.
                for name in names:
                    run_once(commands[name](script, out, scale), out, workdir)
                for index in range(rounds):
                    times = {
                        name: run_once(commands[name](script, out, scale), out, workdir)
                        for name in rotated(names, index)
                    }
                    plain_wall, plain_cpu = times["plain"]
                    plain_times.setdefault(workload, []).append(plain_cpu)
                    for name in names:
                        wall, cpu = times[name]
                        ratios.setdefault((workload, name), []).append(cpu / plain_cpu)
                        wall_ratios.setdefault((workload, name), []).append(wall / plain_wall)
                alone[workload] = sampler_alone(body, scale, 5 if args.quick else 21)
                print(f"  {workload}: done (scale {scale})")
                sys.stdout.flush()

        shown = [n for n in [*names, *missing] if n != "plain"]
        for title, table in (
            (
                "CPU time of the job's process (the figure judged: steady on a shared machine)",
                ratios,
            ),
            (
                "wall time (for context: other users' load moves it by more than the budget)",
                wall_ratios,
            ),
        ):
            rows = []
            for workload in WORKLOADS:
                row = [workload, f"{median(plain_times[workload]):.3f} s"]
                for name in shown:
                    values = table.get((workload, name))
                    row.append("n/a" if values is None else f"{median(values):.3f}x")
                rows.append(row)
            print()
            print(title)
            print(format_table(["workload", "plain CPU", *shown], rows))
        print()
        print("the sampler alone: in this process, paired blocks of work (~1/5 of the above)")
        print("with and without a 100 Hz ProfileSession, CPU time, median of the pairs")
        print(
            format_table(
                ["workload", "sampler on / off"], [[w, f"{r:.3f}x"] for w, r in alone.items()]
            )
        )
        print()
        print("py-spy samples from a process of its own: its CPU is not the job's; it costs")
        print("the job the pauses while it reads the stacks (wall time).")
        for name, why in missing.items():
            print(f"n/a {name}: {why}")

        for workload in WORKLOADS:
            default = median(ratios[(workload, "jobtrace")])
            verdicts.check(
                f"jobtrace default mode, {workload}",
                default <= BUDGET,
                f"{default:.3f}x plain (budget {BUDGET:.2f}x)",
            )
            verdicts.check(
                f"the sampler alone (in-process, paired), {workload}",
                alone[workload] <= BUDGET,
                f"{alone[workload]:.3f}x (budget {BUDGET:.2f}x)",
            )
            exact = ratios.get((workload, "jobtrace --memory exact"))
            memray = ratios.get((workload, "memray"))
            if exact is not None and memray is not None:
                # Paired by round (both ran in it), judged against what separates two runs
                # of the very same command in the same rounds.
                paired = median([e / m for e, m in zip(exact, memray, strict=True)])
                noise = noise_floor(ratios[(workload, AGAIN)])
                verdicts.check(
                    f"jobtrace --memory exact vs memray, {workload}",
                    paired <= 1 + noise,
                    f"{paired:.3f}x memray's time (noise floor here ±{noise:.1%}; "
                    f"{median(exact):.3f}x vs {median(memray):.3f}x plain)",
                )
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
