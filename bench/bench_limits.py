"""The cost of the input bounds (:mod:`jobtrace.limits`) on the store writer's thread.

Budget: writing a batch into SQLite with the bounds takes at most 5 % longer than
without them, for metrics and for spans with a small ``info`` document. Nothing here runs
on the caller's thread: ``log_metric`` and spans are measured by ``bench_metrics.py`` and
``bench_tracing.py``.

Cases, each a batch of fresh records (new keys every round, so every write inserts) written
by one :class:`~jobtrace.store.writer.SQLiteWriter`, interleaved round by round:

- *bounded*: what the writer does — :func:`jobtrace.limits.screen` of the batch, rows whose
  documents go through the bounded dumper, ``executemany``;
- *peer, unbounded*: the same writer with the screening skipped and a bare
  ``orjson.dumps`` in place of the bounded dumper (the writer before the bounds).

The row-building share alone (``rows``) is printed too, for context.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread
from jobtrace import model
from jobtrace.store import Store, writer

BUDGET = 1.05


def _records(kind: str, n: int, start: int) -> list[model.Record]:
    if kind == model.METRIC:
        return [(model.METRIC, "job-0001", "loss", start + i, 0.5, 1.7e9) for i in range(n)]
    return [
        (model.SPAN, 2**100 + start + i, i + 1, None, "load", i, 1000, {"path": f"/d/{i}.csv"},
         None, None, "job-0001", "host-1", 4242, "MainThread", "bench")
        for i in range(n)
    ]  # fmt: skip


def _bare(value: Any) -> str:
    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(value, default=repr, option=option).decode()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _passthrough(
    self: writer.BatchWriter, kind: str, records: list[model.Record], batch_id: str | None
) -> list[model.Record]:
    return records


def main() -> int:
    args = parse_args(__doc__ or "")
    n, rounds = (5_000, 5) if args.quick else (20_000, 15)
    banner("input bounds on the writer thread", args.quick)
    verdicts = Verdicts("bench_limits")
    bounded_dumper, bounded_screen = writer._dump_doc, writer.BatchWriter._screen
    counter = iter(range(0, 10**12, n))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        Store(f"sqlite:///{tmp}/bench.db").close()  # creates the schema
        sink = writer.SQLiteWriter(Path(tmp) / "bench.db")
        for kind in (model.METRIC, model.SPAN):

            def bounded(kind: str = kind) -> float:
                batch = _records(kind, n, next(counter))
                return _timed(lambda: sink.write(batch))

            def unbounded(kind: str = kind) -> float:
                batch = _records(kind, n, next(counter))
                writer._dump_doc, writer.BatchWriter._screen = _bare, _passthrough  # type: ignore[method-assign]
                try:
                    return _timed(lambda: sink.write(batch))
                finally:
                    writer._dump_doc = bounded_dumper
                    writer.BatchWriter._screen = bounded_screen  # type: ignore[method-assign]

            times = interleave({"bounded": bounded, "peer": unbounded}, rounds)
            ratio = median(times["bounded"]) / median(times["peer"])
            ok = verdicts.check(
                f"{kind} write",
                ratio <= BUDGET,
                f"{ratio:.3f}x the unbounded writer's time (budget {BUDGET}x)",
            )
            for name in ("bounded", "peer"):
                per = [t / n * 1e9 for t in times[name]]
                rows.append([f"{kind}: {name}", f"{median(per):.0f}", spread(per)])
            rows.append([f"{kind}: ratio", f"{ratio:.3f}x", ok])
        sink.close()
    print(format_table(["case", "ns/record", "rounds"], rows))
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
