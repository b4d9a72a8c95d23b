"""A recorded batch over real files: parse sensor CSV files on worker threads, a few of
them broken, and read the batch back from the store afterwards.

    python examples/batch_files.py                 # 200 generated files, 4 threads
    python examples/batch_files.py -n 1000 -w 8 --processes
    jobtrace batch stats <batch id>                # printed at the end
    jobtrace batch items <batch id> --status error

It writes the files into a temporary directory (removed at the end): CSV files with a
header and rows of readings, plus some that are broken on purpose — a non-numeric value,
a truncated row, binary garbage — and some empty ones, which are skipped. Each file is
read, parsed and summarised (mean and range per column) by ``parse_file``, which reports
its rows as samples, its values as measurements and its size in bytes; a broken file
raises and is recorded as an error with its type and message while the batch goes on.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import jobtrace.batch

COLUMNS = ("temperature", "pressure", "humidity")


def write_files(directory: Path, count: int, seed: int = 1) -> list[Path]:
    """``count`` CSV files; about one in twelve is broken and one in twenty is empty."""
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        path = directory / f"sensor-{i:04d}.csv"
        paths.append(path)
        if i % 20 == 7:
            path.write_text("")
            continue
        rows = [
            [f"{rng.gauss(20, 5):.3f}", f"{rng.gauss(1013, 8):.2f}", f"{rng.uniform(20, 90):.1f}"]
            for _ in range(rng.randrange(200, 5000))
        ]
        if i % 12 == 5:
            rows[rng.randrange(len(rows))][1] = "n/a"  # a value that is not a number
        elif i % 12 == 9:
            rows[rng.randrange(len(rows))] = rows[0][:1]  # a truncated row
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        if i % 50 == 11:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.randbytes(300))  # not a CSV at all
    return paths


def parse_file(path: Path) -> dict[str, tuple[float, float, float]]:
    """Mean, min and max of every column of one file."""
    size = path.stat().st_size
    if size == 0:
        raise jobtrace.batch.Skip("empty file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if tuple(header) != COLUMNS:
            raise ValueError(f"unexpected header {header!r}")
        columns: list[list[float]] = [[] for _ in COLUMNS]
        for line, row in enumerate(reader, start=2):
            if len(row) != len(COLUMNS):
                raise ValueError(f"line {line}: expected {len(COLUMNS)} values, got {len(row)}")
            for values, text in zip(columns, row, strict=True):
                values.append(float(text))
    rows = len(columns[0])
    jobtrace.batch.report(samples=rows, measurements=rows * len(COLUMNS), nbytes=size)
    return {
        name: (statistics.fmean(values), min(values), max(values))
        for name, values in zip(COLUMNS, columns, strict=True)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("-n", "--files", type=int, default=200, help="files to generate")
    parser.add_argument("-w", "--workers", type=int, default=4, help="worker threads")
    parser.add_argument("--processes", action="store_true", help="use worker processes")
    parser.add_argument("--export", metavar="DIR", help="also export JSON and CSV into DIR")
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="jobtrace-batch-example-"))
    try:
        paths = write_files(directory, args.files)
        results = jobtrace.batch.map(
            parse_file, paths, workers=args.workers, processes=args.processes, name="sensors"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    summary = results.summary().to_dict()
    parsed = [r for r in results if r is not None]
    hottest = max(parsed, key=lambda r: r["temperature"][2])["temperature"][2] if parsed else None
    print(
        f"\n{summary['processed_count']} of {summary['total_files']} files parsed, "
        f"{summary['error_count']} failed, {summary['skip_count']} skipped; "
        f"{summary['throughput']['samples_per_second']:.0f} rows/s; hottest reading {hottest}"
    )
    for index, failure in sorted(results.failures.items())[:5]:
        print(f"  {paths[index].name}: {failure.error_type}: {failure.error_message}")
    if args.export:
        out = Path(args.export)
        results.metrics.export_json(out / f"{results.batch_id}.json")
        results.metrics.export_csv(out / f"{results.batch_id}.csv")
        print(f"exported {out / results.batch_id}.json and .csv")
    print(f"\nread it back:  jobtrace batch stats {results.batch_id}")
    print(f"               jobtrace batch items {results.batch_id} --status error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
