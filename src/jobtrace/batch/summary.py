"""A batch's summary in TraceKit's shape, built one way whether from memory or from the store.

Both sides first reduce a batch to the same few aggregates (:class:`BatchStats`): counts
per status, the sum, extremes, median and squared deviations of the timed durations, and
throughput totals. :meth:`BatchSummary.from_stats` turns those into the summary, so the
summary a running :class:`~jobtrace.batch.BatchMetrics` reports and the one
``jobtrace batch stats`` computes later in SQL differ at most by float rounding in the
sums (never in what ``to_dict`` prints, which rounds as TraceKit does) — and, for a batch
larger than what ``BatchMetrics`` keeps in memory, in the median, which it then estimates
from a sketch (:class:`ItemAggregates`, within 0.5 %) while SQL reads it exactly.

TraceKit's rules are kept on purpose, so numbers match what its users know:

- timing is over *successful items with a positive duration* (skips carry no duration,
  errors often a partial one);
- the total duration is the batch's wall time from ``start()`` to ``finish()``, or the sum
  of the timed durations when the batch was not both started and finished;
- throughput counts successful items only; errors by type count errors that name a type.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter, mul, sub
from typing import IO, Any, NamedTuple

from jobtrace import model
from jobtrace._clock import iso
from jobtrace.batch.sketch import QuantileSketch

__all__ = [
    "FILE_METRICS_FIELDS",
    "OTHER_ERROR_TYPES",
    "BatchStats",
    "BatchSummary",
    "ErrorBreakdown",
    "ItemAggregates",
    "ThroughputStats",
    "TimingStats",
    "exact_median",
    "file_metrics",
    "stats_of_items",
    "summary_row",
    "write_file_metrics_csv",
]

#: Positions of item fields in an ``ITEM`` record tuple (the kind comes first).
_AT = {name: i + 1 for i, name in enumerate(model.FIELDS[model.ITEM])}
_STATUS, _DURATION = _AT["status"], _AT["duration"]
_SAMPLES, _MEASUREMENTS, _BYTES = _AT["samples"], _AT["measurements"], _AT["bytes"]
_ERROR_TYPE = _AT["error_type"]

#: Columns of per-item CSV exports, in order (TraceKit's, with ``bytes`` added).
FILE_METRICS_FIELDS = (
    "filename",
    "start_time",
    "end_time",
    "duration_seconds",
    "samples",
    "measurements",
    "bytes",
    "status",
    "error_type",
    "error_message",
    "memory_peak_bytes",
    "samples_per_second",
)


class BatchStats(NamedTuple):
    """The aggregates a summary is built from; computed in Python or in SQL alike."""

    total: int = 0
    processed: int = 0
    errors: int = 0
    skipped: int = 0
    #: Successful items with a positive duration: the sample the timing figures describe.
    timed: int = 0
    duration_sum: float = 0.0
    duration_min: float = 0.0
    duration_max: float = 0.0
    duration_median: float = 0.0
    #: Sum of squared deviations of the timed durations from their mean.
    duration_sq_dev: float = 0.0
    samples: int = 0
    measurements: int = 0
    nbytes: int = 0
    #: Error count per error type, most frequent first (ties by name).
    error_types: Mapping[str, int] = {}
    start_time: float | None = None
    end_time: float | None = None


def sorted_error_types(counts: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Error types most frequent first, ties by name: one order for memory and store."""
    return dict(sorted(counts, key=lambda kv: (-kv[1], kv[0])))


def median_of_sorted(values: Sequence[float]) -> float:
    """The median of ascending ``values`` (0.0 when empty), as ``statistics.median``."""
    n = len(values)
    if n == 0:
        return 0.0
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def exact_median(items: Iterable[model.Record]) -> float:
    """The exact median of the timed durations of ``ITEM`` records (sorts them: O(n))."""
    return median_of_sorted(
        sorted(d for r in items if r[_STATUS] == "success" and (d := r[_DURATION]) > 0)
    )


def stats_of_items(
    items: Iterable[model.Record], start_time: float | None, end_time: float | None
) -> BatchStats:
    """Aggregate ``ITEM`` record tuples in Python, as :mod:`jobtrace.store.items` does in
    SQL; the median is exact (this holds every item: see :class:`ItemAggregates` for the
    streaming form)."""
    records = items if isinstance(items, list) else list(items)
    aggregates = ItemAggregates()
    aggregates.add(records)
    return aggregates.stats(start_time, end_time, median=exact_median(records))


#: Distinct error types counted by name; more are counted together under this key.
OTHER_ERROR_TYPES = "(other types)"
_status_of = itemgetter(_STATUS)
_duration_of = itemgetter(_DURATION)
_samples_of = itemgetter(_SAMPLES)
_measurements_of = itemgetter(_MEASUREMENTS)
_bytes_of = itemgetter(_BYTES)


class ItemAggregates:
    """A batch's summary aggregates, updated chunk by chunk in memory that does not grow
    with the number of items.

    Exact: the counts per status, the samples, measurements and bytes (Python ints), the
    minimum and maximum duration, the error count per type (up to ``max_error_types``
    distinct types; further types are counted together under ``"(other types)"``). The sum of
    the durations is correctly rounded per chunk (``math.fsum``), and the mean and the sum of
    squared deviations combine per chunk by Chan, Golub & LeVeque's pairwise update (Welford's
    algorithm for chunks): both agree with a two-pass computation over all items to about
    1e-15 relative. Approximate: the median, from a :class:`QuantileSketch`, within its
    relative accuracy (0.5 % by default) of the exact median.

    Not thread-safe: the caller serialises :meth:`add` and :meth:`stats`.
    """

    __slots__ = (
        "_mean",
        "_sq_dev",
        "duration_sum",
        "error_types",
        "errors",
        "max_error_types",
        "measurements",
        "nbytes",
        "processed",
        "samples",
        "sketch",
        "skipped",
        "timed",
        "total",
    )

    def __init__(self, relative_accuracy: float = 0.005, max_error_types: int = 1000) -> None:
        #: Items added so far, and how many of them succeeded, failed, were skipped.
        self.total = self.processed = self.errors = self.skipped = 0
        self.timed = 0
        self.duration_sum = 0.0
        self._mean = 0.0
        self._sq_dev = 0.0
        self.samples = self.measurements = self.nbytes = 0
        self.error_types: dict[str, int] = {}
        self.max_error_types = max_error_types
        self.sketch = QuantileSketch(relative_accuracy)

    def add(self, chunk: Sequence[model.Record]) -> None:
        """Fold a chunk of ``ITEM`` record tuples in. Per item, the work is done by C-level
        ``map``/``sum``/``list.count`` calls, so a chunk of a few thousand costs a small
        fraction of a microsecond per item."""
        n = len(chunk)
        if not n:
            return
        statuses = list(map(_status_of, chunk))
        succeeded = statuses.count("success")
        errors = 0 if succeeded == n else statuses.count("error")
        self.total += n
        self.processed += succeeded
        self.errors += errors
        if succeeded + errors < n:
            self.skipped += statuses.count("skipped")
        if succeeded:
            ok = chunk if succeeded == n else [r for r in chunk if r[_STATUS] == "success"]
            self.samples += sum(map(_samples_of, ok))
            self.measurements += sum(map(_measurements_of, ok))
            self.nbytes += sum(map(_bytes_of, ok))
            durations = list(map(_duration_of, ok))
            if min(durations) <= 0.0:  # untimed successes are rare: filter only then
                durations = [d for d in durations if d > 0.0]
            if durations:
                self._add_timed(durations)
        if errors:
            self._add_errors(chunk)

    def _add_timed(self, durations: list[float]) -> None:
        n_b = len(durations)
        total_b = math.fsum(durations)
        mean_b = total_b / n_b
        deviations = list(map(sub, durations, repeat(mean_b)))
        sq_dev_b = math.fsum(map(mul, deviations, deviations))
        n_a, n = self.timed, self.timed + n_b
        delta = mean_b - self._mean
        # Chan et al.: the squared deviations of the union from its mean, without a second
        # pass and without the cancellation of a sum-of-squares formula.
        self._sq_dev += sq_dev_b + delta * delta * n_a * n_b / n
        self._mean += delta * n_b / n
        self.timed = n
        self.duration_sum = math.fsum((self.duration_sum, total_b))
        self.sketch.add_many(durations)  # which also keeps the exact minimum and maximum

    def _add_errors(self, chunk: Sequence[model.Record]) -> None:
        counts = self.error_types
        for rec in chunk:
            if rec[_STATUS] == "error" and (etype := rec[_ERROR_TYPE]) is not None:
                if etype not in counts and len(counts) >= self.max_error_types:
                    # Bounded memory: a batch whose error types embed ids would otherwise
                    # keep one entry per item.
                    etype = OTHER_ERROR_TYPES
                counts[etype] = counts.get(etype, 0) + 1

    def stats(
        self, start_time: float | None, end_time: float | None, *, median: float | None = None
    ) -> BatchStats:
        """The aggregates as :class:`BatchStats`; ``median`` replaces the sketch's estimate
        when the caller knows the exact one."""
        n = self.timed
        return BatchStats(
            total=self.total,
            processed=self.processed,
            errors=self.errors,
            skipped=self.skipped,
            timed=n,
            duration_sum=self.duration_sum,
            duration_min=self.sketch.min if n else 0.0,
            duration_max=self.sketch.max if n else 0.0,
            duration_median=self.sketch.median() if median is None else median,
            duration_sq_dev=self._sq_dev,
            samples=self.samples,
            measurements=self.measurements,
            nbytes=self.nbytes,
            error_types=sorted_error_types(self.error_types.items()),
            start_time=start_time,
            end_time=end_time,
        )


@dataclass(frozen=True, slots=True)
class TimingStats:
    """Wall time of the batch and time per item, in seconds."""

    total_duration: float = 0.0
    average_per_file: float = 0.0
    min_per_file: float = 0.0
    max_per_file: float = 0.0
    median_per_file: float = 0.0
    stddev_per_file: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "total_duration_seconds": round(self.total_duration, 3),
            "average_per_file_seconds": round(self.average_per_file, 3),
            "min_per_file_seconds": round(self.min_per_file, 3),
            "max_per_file_seconds": round(self.max_per_file, 3),
            "median_per_file_seconds": round(self.median_per_file, 3),
            "stddev_per_file_seconds": round(self.stddev_per_file, 3),
        }


@dataclass(frozen=True, slots=True)
class ThroughputStats:
    """Successful items, samples, measurements and bytes per second of total duration."""

    files_per_second: float = 0.0
    samples_per_second: float = 0.0
    measurements_per_second: float = 0.0
    bytes_per_second: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "files_per_second": round(self.files_per_second, 3),
            "samples_per_second": round(self.samples_per_second, 0),
            "measurements_per_second": round(self.measurements_per_second, 0),
            "bytes_per_second": round(self.bytes_per_second, 0),
        }


@dataclass(frozen=True, slots=True)
class ErrorBreakdown:
    """Errors by type, their total, and their share of all items (``rate`` is a fraction)."""

    by_type: dict[str, int] = field(default_factory=dict)
    total: int = 0
    rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_type": dict(self.by_type),
            "total": self.total,
            "rate_percent": round(self.rate * 100, 2),
        }


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """TraceKit's ``BatchMetricsSummary``: what :meth:`BatchMetrics.summary` returns."""

    batch_id: str
    total_files: int
    processed_count: int
    error_count: int
    skip_count: int
    timing: TimingStats
    throughput: ThroughputStats
    errors: ErrorBreakdown
    #: ISO 8601 with a UTC offset; None until the batch has started (ended).
    start_time: str | None
    end_time: str | None

    @classmethod
    def from_stats(cls, batch_id: str, stats: BatchStats) -> BatchSummary:
        n = stats.timed
        if stats.start_time is not None and stats.end_time is not None:
            total = stats.end_time - stats.start_time
        else:
            total = stats.duration_sum
        timing = TimingStats(
            total_duration=total,
            average_per_file=stats.duration_sum / n if n else 0.0,
            min_per_file=stats.duration_min,
            max_per_file=stats.duration_max,
            median_per_file=stats.duration_median,
            stddev_per_file=math.sqrt(stats.duration_sq_dev / (n - 1)) if n > 1 else 0.0,
        )
        # An empty or instantaneous batch has no rate: zeros, not a division by zero.
        throughput = (
            ThroughputStats(
                files_per_second=stats.processed / total,
                samples_per_second=stats.samples / total,
                measurements_per_second=stats.measurements / total,
                bytes_per_second=stats.nbytes / total,
            )
            if total > 0
            else ThroughputStats()
        )
        errors = ErrorBreakdown(
            by_type=dict(stats.error_types),
            total=stats.errors,
            rate=stats.errors / stats.total if stats.total else 0.0,
        )
        return cls(
            batch_id=batch_id,
            total_files=stats.total,
            processed_count=stats.processed,
            error_count=stats.errors,
            skip_count=stats.skipped,
            timing=timing,
            throughput=throughput,
            errors=errors,
            start_time=iso(stats.start_time),
            end_time=iso(stats.end_time),
        )

    @property
    def success_rate(self) -> float:
        """Successful items as a fraction of all items (0.0 for an empty batch)."""
        return self.processed_count / self.total_files if self.total_files else 0.0

    def to_dict(self) -> dict[str, Any]:
        """TraceKit's summary dict: rounded figures, times in ISO 8601."""
        return {
            "batch_id": self.batch_id,
            "total_files": self.total_files,
            "processed_count": self.processed_count,
            "error_count": self.error_count,
            "skip_count": self.skip_count,
            "success_rate_percent": round(self.success_rate * 100, 2),
            "timing": self.timing.to_dict(),
            "throughput": self.throughput.to_dict(),
            "errors": self.errors.to_dict(),
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


def summary_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A summary dict flattened to one CSV row: ``timing.total_duration_seconds``, …, and
    one ``errors.by_type.<type>`` column per error type."""
    row: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                if isinstance(inner, Mapping):
                    for name, count in inner.items():
                        row[f"{key}.{sub}.{name}"] = count
                else:
                    row[f"{key}.{sub}"] = inner
        else:
            row[key] = value
    return row


def file_metrics(item: Mapping[str, Any]) -> dict[str, Any]:
    """One item (a store row, or a record's fields by name) as TraceKit's per-file dict."""
    start, duration = item["start_time"], item["duration"]
    samples = item["samples"] or 0
    peak_kb = item["memory_peak_kb"]
    return {
        "filename": item["name"],
        "start_time": iso(start),
        "end_time": iso(None if start is None else start + duration),
        "duration_seconds": duration,
        "samples": samples,
        "measurements": item["measurements"] or 0,
        "bytes": item["bytes"] or 0,
        "status": item["status"],
        "error_type": item["error_type"],
        "error_message": item["error_message"],
        # Stored in KiB (the store's unit); TraceKit reports bytes.
        "memory_peak_bytes": None if peak_kb is None else round(peak_kb * 1024),
        "samples_per_second": samples / duration if duration > 0 else 0,
    }


def write_file_metrics_csv(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> None:
    """Write per-item dicts (from :func:`file_metrics`) as CSV with a header row; an empty
    batch still gets its header, so the file always says what it holds."""
    writer = csv.DictWriter(out, fieldnames=FILE_METRICS_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
