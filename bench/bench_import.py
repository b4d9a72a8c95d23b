"""Cost of ``import jobtrace``: ``python -c "import jobtrace"`` vs ``python -c "pass"``.

Budget: at most 25 ms more than starting Python and doing nothing.

Both commands run as subprocesses, alternately, with the same environment and working
directory; the median of the paired differences (each import run minus the ``pass`` run
of the same round) is the import's cost: the interpreter's own start-up, ``site`` and any
``.pth`` hooks cancel out, and so does a slow spell of the machine that spans one round.
Then one ``python -X importtime`` run lists the jobtrace modules that cost the most, and
the outside modules they pull in. Import-time figures are inflated by the measuring
itself: read them as shares, not as totals.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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

BUDGET_MS = 25.0
TOP = 10
OWN = "jobtrace"
#: Packages `import jobtrace` should leave to the code paths that need them.
HEAVY = frozenset(
    {"sqlalchemy", "alembic", "click", "rich", "psycopg", "psutil", "orjson", "httpx", "numpy"}
)


@dataclass
class Entry:
    """One ``-X importtime`` line."""

    name: str
    depth: int
    self_us: int
    cumulative_us: int
    parent: str | None = None


def parse_importtime(text: str) -> list[Entry]:
    """Parse ``-X importtime`` output into entries with their importing module.

    Lines come children first, each indented two spaces per level below the module that
    imported it, so a line's parent is the next line one level shallower.
    """
    entries: list[Entry] = []
    pending: list[Entry] = []  # entries whose parent line has not been seen yet
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3:
            continue
        raw_name = fields[2].rstrip()
        name = raw_name.lstrip()
        depth = (len(raw_name) - len(name) - 1) // 2
        entry = Entry(name, depth, int(fields[0]), int(fields[1]))
        while pending and pending[-1].depth > depth:
            pending.pop().parent = name
        pending.append(entry)
        entries.append(entry)
    return entries


def is_own(name: str) -> bool:
    return name == OWN or name.startswith(OWN + ".")


def importtime_report(
    cwd: Path, env: dict[str, str], argv: list[str] | None = None, label: str = f"import {OWN}"
) -> None:
    """One ``-X importtime`` run of ``python argv`` (default ``-c "import jobtrace"``):
    jobtrace's costliest modules, the outside modules it imports, and which heavy packages
    the process loaded.

    Everything imported from the first jobtrace module on counts as the command's: the
    interpreter's start-up (``site``, ``.pth`` hooks) comes before it. Outside modules that
    jobtrace imports inside a function show as top-level lines with no importing module.
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *(argv or ["-c", f"import {OWN}"])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    entries = parse_importtime(proc.stderr)
    first = next((i for i, e in enumerate(entries) if is_own(e.name)), None)
    if first is None:
        print(f"-X importtime: no line for {OWN} (already imported at start-up?)")
        return
    # A module's line comes after those of the modules it imported, so the command's own
    # imports start with the first top-level line after the start-up's last one.
    start = max((i + 1 for i, e in enumerate(entries[:first]) if e.depth == 0), default=0)
    mine = entries[start:]
    total = sum(e.cumulative_us for e in mine if e.depth == 0)
    print(
        f"-X importtime, one run: `{label}` imported modules for {total / 1000:.1f} ms "
        "cumulative after the interpreter's start-up"
    )

    own = sorted((e for e in mine if is_own(e.name)), key=lambda e: e.self_us, reverse=True)
    rows = [
        [
            e.name,
            f"{e.self_us / 1000:.2f}",
            f"{e.cumulative_us / 1000:.2f}",
            f"{e.self_us / total:.0%}",
        ]
        for e in own[:TOP]
    ]
    print(f"\n{OWN} modules by self time (top {TOP}):")
    print(format_table(["module", "self ms", "cumulative ms", "share"], rows))

    outside = [
        e
        for e in mine
        if not is_own(e.name) and (e.depth == 0 or (e.parent is not None and is_own(e.parent)))
    ]
    outside.sort(key=lambda e: e.cumulative_us, reverse=True)
    rows = [
        [
            e.name,
            e.parent or "(a function)",
            f"{e.cumulative_us / 1000:.2f}",
            f"{e.cumulative_us / total:.0%}",
        ]
        for e in outside[:TOP]
    ]
    print(f"\nmodules {OWN} imports from outside itself, by cumulative time (top {TOP}):")
    print(format_table(["module", "imported by", "cumulative ms", "share"], rows))

    heavy = sorted({e.name.split(".")[0] for e in mine} & HEAVY)
    print(f"\nheavy packages loaded by `{label}`: {', '.join(heavy) if heavy else 'none'}")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds = 8 if args.quick else 30
    banner(
        "bench_import: python -c 'import jobtrace' vs python -c 'pass'",
        args.quick,
        [
            f"{rounds} runs of each command, alternating",
            BYTECODE_NOTE.format(prefix=PYCACHE_PREFIX),
            "the 'no .pyc' pair (info only) runs with PYTHONDONTWRITEBYTECODE=1 and no cache "
            "prefix: an editable install then compiles jobtrace from source at every start",
            load_note(),
        ],
    )
    verdicts = Verdicts("bench_import")

    with tempfile.TemporaryDirectory(prefix="jt-bench-import-") as tmp:
        cwd = Path(tmp)
        env = clean_env()
        env_nopyc = clean_env(bytecode_cache=False, PYTHONDONTWRITEBYTECODE="1")
        env_nopyc.pop("PYTHONPYCACHEPREFIX", None)

        def command(code: str, environ: dict[str, str]) -> float:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environ, check=True)
            return (time.perf_counter() - start) * 1000

        cases = {
            "pass": lambda: command("pass", env),
            "import": lambda: command(f"import {OWN}", env),
            "pass-nopyc": lambda: command("pass", env_nopyc),
            "import-nopyc": lambda: command(f"import {OWN}", env_nopyc),
        }
        interleave(cases, 2)  # warm-up: page cache, bytecode caches
        results = interleave(cases, rounds)
        rows = []
        paired_diffs: dict[str, float] = {}
        for suffix, label, info in (("", "", ""), ("-nopyc", ", no .pyc", " (info)")):
            base = median(results["pass" + suffix])
            imported = median(results["import" + suffix])
            paired = median(
                [
                    i - p
                    for i, p in zip(
                        results["import" + suffix], results["pass" + suffix], strict=True
                    )
                ]
            )
            paired_diffs[suffix] = paired
            rows.append(
                [
                    f'python -c "pass"{label} (peer)',
                    f"{base:.1f}",
                    spread(results["pass" + suffix]),
                    "-",
                    "-",
                    "1.00",
                ]
            )
            rows.append(
                [
                    f'python -c "import {OWN}"{label}{info}',
                    f"{imported:.1f}",
                    spread(results["import" + suffix]),
                    f"{imported - base:+.1f}",
                    f"{paired:+.1f}",
                    f"{imported / base:.2f}",
                ]
            )
        print(
            format_table(
                ["command", "wall ms", "rounds min..max", "diff ms", "paired diff ms", "ratio"],
                rows,
            )
        )
        print()
        base = median(results["pass"])
        ratio = median([i / p for i, p in zip(results["import"], results["pass"], strict=True)])
        verdicts.check(
            f"import {OWN}",
            paired_diffs[""] <= BUDGET_MS,
            f"{paired_diffs['']:+.1f} ms over `python -c pass` (median of {rounds} paired "
            f"rounds; {ratio:.2f}x; budget <= {BUDGET_MS:.0f} ms); "
            f"without .pyc files {paired_diffs['-nopyc']:+.1f} ms",
        )
        importtime_report(cwd, env)
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
