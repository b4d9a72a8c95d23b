"""Word frequencies and an inverted index over real files: by default every ``.py`` file
of the running Python's standard library (about 1,000 files and 20 MB of source text, test suites
and installed packages left out), so it does the same real work on any machine.

Run it as a recorded job::

    jobtrace run examples/wordfreq.py            # the standard library
    jobtrace run examples/wordfreq.py ~/src -n 5 # any directory tree

It reads each file, splits it into identifiers, counts them, and keeps an in-memory index
from every identifier to the files and lines it occurs on (that index is what makes the
peak memory noticeable: a few hundred MiB). It prints the most common identifiers and
how many files mention the rarest ones.
"""

from __future__ import annotations

import argparse
import re
import sys
import sysconfig
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import jobtrace

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")


SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}


def source_files(root: Path) -> list[Path]:
    """Python files under ``root``, leaving out installed packages and test suites."""
    return sorted(
        p
        for p in root.rglob("*.py")
        if p.is_file() and not SKIP.intersection(p.relative_to(root).parts)
    )


def index_files(
    files: list[Path],
) -> tuple[Counter[str], Counter[tuple[str, str]], dict[str, list[tuple[int, int]]], int]:
    counts: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()  # identifiers that follow each other
    # identifier -> [(file number, line number), ...]: deliberately the whole index in memory
    postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
    unreadable = 0
    for number, path in enumerate(files):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            unreadable += 1
            continue
        for line_number, line in enumerate(text.splitlines(), 1):
            words = WORD.findall(line)
            counts.update(words)
            pairs.update(pairwise(words))
            for word in words:
                postings[word].append((number, line_number))
    return counts, pairs, postings, unreadable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("-n", "--top", type=int, default=10, help="how many words to show")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")

    files = source_files(args.root)
    job = jobtrace.current_job()
    if job is not None:
        job.tags["root"] = str(args.root)
    counts, pairs, postings, unreadable = index_files(files)
    total = sum(counts.values())
    distinct = len(counts)
    summary = f"{len(files)} files ({unreadable} unreadable): {total:,} identifiers"
    print(f"{summary}, {distinct:,} distinct")
    width = max((len(w) for w, _ in counts.most_common(args.top)), default=4)
    for word, count in counts.most_common(args.top):
        spread = len({file for file, _ in postings[word]})
        print(f"  {word:<{width}}  {count:>9,}  in {spread:,} files")
    singletons = sum(1 for c in counts.values() if c == 1)
    print(f"{singletons:,} identifiers occur exactly once")
    (first, second), times = pairs.most_common(1)[0] if pairs else (("-", "-"), 0)
    print(
        f"{len(pairs):,} distinct pairs; the most common is {first!r} {second!r} ({times:,} times)"
    )
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
