"""Helpers shared by the benchmark scripts: arguments, interleaved rounds, tables, verdicts.

The scripts run as ``python bench/<name>.py``, which puts this directory first on
``sys.path``, so they import this module as ``_common``.

Every benchmark compares jobtrace with a peer measured in the same process run, alternating
the two within each round and rotating their order from round to round, and reports the
median over rounds. Absolute times are printed for context only: on shared machines the
ratio against the peer is the figure to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

#: Exit status of a script that ran but found a figure over its budget (with ``--strict``).
EXIT_OVER_BUDGET = 1


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    *,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The options every benchmark takes; scripts read ``quick`` and ``strict``.

    ``extra`` adds a script's own options to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument(
        "--quick", action="store_true", help="a short run (~5 s) with fewer, smaller rounds"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit with status {EXIT_OVER_BUDGET} when a figure is over its budget",
    )
    return parser.parse_args(argv)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """``names`` rotated by the round number, so no case always runs first (or last)."""
    if not names:
        return []
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


def interleave(
    cases: Mapping[str, Callable[[], float]],
    rounds: int,
    *,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Call every case once per round, in rotating order; collect what each returns."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for index in range(rounds):
        for name in rotated(names, index):
            results[name].append(cases[name]())
        if on_round is not None:
            on_round(index)
    return results


def spread(values: Sequence[float]) -> str:
    """``min..max`` of the rounds, to show how noisy the run was."""
    return f"{min(values):.4g}..{max(values):.4g}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


@dataclass
class Verdicts:
    """Budget checks of one script, printed at the end and turned into its exit status."""

    script: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, what: str, ok: bool, detail: str) -> str:
        """Record one budget check; returns the verdict word for a table cell."""
        self.checks.append((what, ok, detail))
        return verdict_word(ok)

    @property
    def all_ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def report(self, strict: bool) -> int:
        """Print the verdicts; the exit status for the script."""
        print()
        print(f"Budget verdicts ({self.script}):")
        if not self.checks:
            print("  (nothing was measured against a budget)")
        for what, ok, detail in self.checks:
            print(f"  [{verdict_word(ok)}] {what}: {detail}")
        summary = "within budget" if self.all_ok else "OVER BUDGET"
        print(f"RESULT {self.script}: {summary}")
        sys.stdout.flush()
        return EXIT_OVER_BUDGET if strict and not self.all_ok else 0


def verdict_word(ok: bool) -> str:
    return "ok" if ok else "OVER"


def banner(title: str, quick: bool, notes: Sequence[str] = ()) -> None:
    """The heading every script prints: what it measures, how, and on what."""
    mode = "quick" if quick else "full"
    print(f"== {title} ({mode} run) ==")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s), pid {os.getpid()}; "
        "rounds interleave jobtrace and its peer, figures are medians over rounds"
    )
    for note in notes:
        print(f"note: {note}")
    print()
    sys.stdout.flush()


@contextmanager
def stopwatch(label: str) -> Iterator[None]:
    """Print how long a block took (for a script's total run time)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        print(f"({label} took {time.perf_counter() - start:.1f} s)")


#: Where subprocesses keep their bytecode caches (outside the repository, kept between runs).
PYCACHE_PREFIX = Path(tempfile.gettempdir()) / f"jobtrace-bench-pycache-{os.getuid()}"

BYTECODE_NOTE = (
    "subprocesses run with bytecode caching on (PYTHONPYCACHEPREFIX={prefix}, "
    "PYTHONDONTWRITEBYTECODE unset), as an installed package would; warm-up runs fill it"
)


def load_note() -> str:
    """The machine's load at the start, for reading the absolute figures that follow: on
    a busy shared machine start-up times stretch, and differences with them."""
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    busy = load > cpus
    return f"load average {load:.1f} on {cpus} cpu(s) at the start" + (
        "; the machine is busy: absolute times and differences run high" if busy else ""
    )


def clean_env(*, bytecode_cache: bool = True, **extra: str) -> dict[str, str]:
    """The environment for a measured subprocess: no ``JOBTRACE_*`` variables, no import
    profiling, and (by default) bytecode caching on, plus ``extra``.

    An editable install under ``PYTHONDONTWRITEBYTECODE=1`` compiles jobtrace from source
    at every start, which no installed deployment does; the cache lives in a directory of
    its own so nothing is written into the source tree.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACE_")}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE_PREFIX)
    env.update(extra)
    return env
