"""``BatchMetrics``: TraceKit's per-file batch metrics, recorded into the store as it goes.

>>> import jobtrace
>>> metrics = jobtrace.BatchMetrics(batch_id="scan-0042")           # doctest: +SKIP
>>> metrics.start()                                                 # doctest: +SKIP
>>> metrics.record_file("a.wfm", duration=0.5, samples=100_000)     # doctest: +SKIP
>>> metrics.record_error("b.wfm", "ValueError", "bad header")      # doctest: +SKIP
>>> metrics.finish()                                                # doctest: +SKIP
>>> metrics.summary().to_dict()["error_count"]                      # doctest: +SKIP
1

A batch is a job (its id is the batch id) and every file is an ``ITEM`` record through the
recorder, so ``jobtrace batch stats scan-0042`` shows the same summary after the process is
gone. ``record_file`` does no I/O and takes no lock: it appends the record tuple to the
recorder's buffer and to a short pending queue (``deque.append`` is atomic under the GIL),
so any number of threads may record at once. Every 4,096 files the queue is folded: into a
list while the batch holds at most ``keep_in_memory`` files, past that into streaming
aggregates (:class:`~jobtrace.batch.summary.ItemAggregates`, a fraction of a microsecond per
file), so memory does not grow with the batch: a batch of ten million files holds what a
batch of ten thousand does.

What stays in memory, and so what reads cost:

- :meth:`BatchMetrics.summary`: counts, sums, min/max, mean, spread, errors by type and
  throughput are exact at any size. The median is exact while the batch holds at most
  ``keep_in_memory`` files (10,000 by default), and beyond that estimated from a quantile
  sketch within 0.5 % of the exact median (:mod:`jobtrace.batch.sketch`);
  :func:`jobtrace.batch.stored_summary` reads the exact one from the store.
- :meth:`BatchMetrics.get_file_metrics` and the exports: up to ``keep_in_memory`` files
  the rows come from memory; past it, the first rows are released and the files are read
  back from where the recorder writes (after a flush), streamed a page at a time by the
  exports: a SQLite or PostgreSQL store, a ``file://`` JSON-lines file or a ``memory://``
  sink. A server (``http://``) cannot hand items back, nor can anything when recording is
  off; then a read past the window raises :class:`~jobtrace.errors.StoreError` saying so.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from itertools import repeat, starmap
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from jobtrace import _clock, _ids, model
from jobtrace.batch.summary import (
    BatchSummary,
    ItemAggregates,
    file_metrics,
    stats_of_items,
    write_file_metrics_csv,
)
from jobtrace.errors import ConfigurationError, JobtraceError
from jobtrace.jobs import Job
from jobtrace.recorder import get_recorder

__all__ = ["BatchMetrics", "ExportError"]

log = logging.getLogger("jobtrace.batch")

_ITEM = model.ITEM
_new_id = _ids.local_unique_id
_wall = _clock.wall
_STATUSES = frozenset(model.ITEM_STATUSES)
_INF = math.inf
_FIELDS = model.FIELDS[model.ITEM]
# Column limits of the store (see jobtrace.store.schema): longer values are cut, not refused.
_MAX_ERROR_TYPE = 256
_MAX_MESSAGE = 10_000
#: Status of the batch's job when ``finish()`` is called without one.
_DEFAULT_STATUS = "succeeded"
#: Files recorded before the pending queue is folded into the aggregates: large enough that
#: the fold's per-chunk work is negligible per file, small enough to be a few MiB at most.
_FOLD_AT = 4096
#: Files whose rows (and durations, for an exact median) are kept by default.
DEFAULT_KEEP_IN_MEMORY = 10_000
#: Numbers the temporary files of exports (``next`` on it is atomic under the GIL).
_export_number = itertools.count()


class ExportError(JobtraceError, OSError):
    """An export file could not be written; the message names the path and the reason."""


class _Drop(Exception):
    """A record_file argument was refused; the message says which and why."""


def _count(name: str, value: Any) -> int:
    # bool is an int subclass but never a count; numpy integers and the like pass __index__.
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise _Drop(f"{name} must be a non-negative integer, got {value!r}")
    value = value.__index__()
    if value < 0:
        raise _Drop(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy floats, Decimal
        except (TypeError, ValueError):
            raise _Drop(f"duration must be a number of seconds, got {value!r}") from None
    seconds = float(value)
    if not 0.0 <= seconds < _INF:
        raise _Drop(f"duration must be finite and not negative, got {value!r}")
    return seconds


def _file_name(value: Any) -> str:
    if isinstance(value, str | os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str):
        raise _Drop(f"filename must be a string or a path, got {type(value).__name__}")
    return model.clean_text(value)


def _text(name: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Drop(f"{name} must be a string or None, got {type(value).__name__}")
    return model.clean_text(value, limit)


class BatchMetrics:
    """Per-file metrics of one batch job, persisted; TraceKit's ``BatchMetrics`` API.

    ``batch_id`` defaults to a new time-ordered id; ``name`` and ``experiment`` name the
    batch's job. Use ``start()``/``finish()`` or ``with BatchMetrics() as metrics:``.
    ``keep_in_memory`` is how many files' rows are kept for an exact median and for reads
    without a round trip to the store (see the module's docstring); memory stays bounded by
    it whatever the batch's size.

    Bad input to ``record_file`` (a negative or non-finite duration, an unknown status, a
    file name that is neither a string nor a path, a negative count) never raises into the
    batch: the file is dropped, counted in :attr:`dropped`, and logged once per batch.
    """

    __slots__ = (
        "_aggregates",
        "_fold_lock",
        "_job",
        "_keep",
        "_kept",
        "_pending",
        "_recorder",
        "batch_id",
        "dropped",
    )

    def __init__(
        self,
        batch_id: str | None = None,
        *,
        name: str | None = None,
        experiment: str | None = None,
        keep_in_memory: int = DEFAULT_KEEP_IN_MEMORY,
    ) -> None:
        if (
            isinstance(keep_in_memory, bool)
            or not isinstance(keep_in_memory, int)
            or (keep_in_memory < 0)
        ):
            raise ConfigurationError(
                f"keep_in_memory must be a number of files >= 0, got {keep_in_memory!r}"
            )
        # The id exists before start(), as TraceKit's does; Job validates a given one.
        job = Job(
            name or "batch",
            experiment=experiment,
            job_id=batch_id or _ids.time_ordered_id(),
        )
        self._job = job
        self.batch_id: str = job.id
        self._recorder = get_recorder()
        # Recorded files not yet folded into the aggregates (at most about _FOLD_AT).
        self._pending: deque[model.Record] = deque()
        self._aggregates = ItemAggregates()
        # Every folded file while there are at most _keep of them (not yet aggregated);
        # None once past that, when the aggregates hold them all.
        self._kept: list[model.Record] | None = []
        self._keep = keep_in_memory
        # Serialises folding and reading the aggregates; never taken by record_file itself
        # except every _FOLD_AT files.
        self._fold_lock = threading.Lock()
        #: Files refused by ``record_file`` for bad input (see the class docstring).
        self.dropped = 0

    @property
    def job(self) -> Job:
        """The batch's job (status, start and end times, peak memory)."""
        return self._job

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Mark the batch as started: its job starts, and its wall time is counted from now."""
        if self._job.status == "created":
            self._job.start()

    def finish(self, status: str | None = None) -> None:
        """Mark the batch as finished: its job ends (``succeeded`` unless ``status`` says
        otherwise; failed files do not fail the batch) and a summary line is logged."""
        if self._job.status != "running":
            return
        self._job.finish(status or _DEFAULT_STATUS)
        self._log_finished()

    def __enter__(self) -> BatchMetrics:
        if self._job.status == "created":
            self._job.__enter__()  # also makes it jobtrace.current_job() in this context
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._job.status == "running":
            self._job.__exit__(exc_type, exc, tb)  # failed or killed if the block raised
            self._log_finished()

    def _log_finished(self) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # a summary of a big batch costs a sort; skip it when nobody listens
        s = self.summary()
        log.info(
            "jobtrace: batch %s finished: %d files, %d processed, %d errors, %d skipped "
            "in %.3f s%s",
            self.batch_id,
            s.total_files,
            s.processed_count,
            s.error_count,
            s.skip_count,
            s.timing.total_duration,
            f"; {self.dropped} records dropped for bad input" if self.dropped else "",
        )

    # -- recording (the hot path) ----------------------------------------------------------

    def record_file(
        self,
        filename: str,
        *,
        duration: float,
        samples: int = 0,
        measurements: int = 0,
        status: str = "success",
        error_type: str | None = None,
        error_message: str | None = None,
        memory_peak: int | None = None,
        nbytes: int = 0,
    ) -> None:
        """Record one processed file: ``duration`` in seconds, ``memory_peak`` in bytes,
        ``status`` one of ``success``, ``error``, ``skipped``; ``nbytes`` (jobtrace's
        addition) counts the bytes it processed, for the bytes-per-second throughput."""
        # The common call, checked in one expression; anything else takes the careful path.
        # (`a | b | c >= 0` holds exactly when no int among them is negative.)
        if (
            type(filename) is str
            and filename.isascii()
            and "\x00" not in filename
            and type(duration) is float
            and 0.0 <= duration < _INF
            and status in _STATUSES
            and type(samples) is int
            and type(measurements) is int
            and type(nbytes) is int
            and samples | measurements | nbytes >= 0
            and error_type is None
            and error_message is None
            and (memory_peak is None or (type(memory_peak) is int and memory_peak >= 0))
        ):
            peak_kb = None if memory_peak is None else memory_peak / 1024
        else:
            try:
                filename = _file_name(filename)
                duration = _seconds(duration)
                if status not in _STATUSES:
                    raise _Drop(
                        f"status must be one of {', '.join(model.ITEM_STATUSES)}, got {status!r}"
                    )
                samples = _count("samples", samples)
                measurements = _count("measurements", measurements)
                nbytes = _count("nbytes", nbytes)
                error_type = _text("error_type", error_type, _MAX_ERROR_TYPE)
                error_message = _text("error_message", error_message, _MAX_MESSAGE)
                peak_kb = None if memory_peak is None else _count("memory_peak", memory_peak) / 1024
            except _Drop as exc:
                self._drop(str(exc))
                return
        rec = (
            _ITEM,
            _new_id(),
            self.batch_id,
            filename,
            _wall() - duration,
            duration,
            samples,
            measurements,
            nbytes,
            status,
            error_type,
            error_message,
            peak_kb,
            None,
        )
        pending = self._pending
        pending.append(rec)
        self._recorder.record(rec)
        if len(pending) >= _FOLD_AT:
            self._fold()

    def record_error(
        self, filename: str, error_type: str, error_message: str, duration: float = 0.0
    ) -> None:
        """Record a file whose processing failed (after ``duration`` seconds)."""
        self.record_file(
            filename,
            duration=duration,
            status="error",
            error_type=error_type,
            error_message=error_message,
        )

    def record_skip(self, filename: str, reason: str = "") -> None:
        """Record a file that was skipped; the reason is kept as its message."""
        self.record_file(filename, duration=0.0, status="skipped", error_message=reason)

    def _drop(self, reason: str) -> None:
        # `+=` on an attribute is not atomic across threads; a lost count of a bad call is
        # harmless, a lock on this path is not worth it.
        self.dropped += 1
        if self.dropped == 1:
            log.warning(
                "jobtrace: batch %s: dropped a file record: %s (further bad records are "
                "counted in BatchMetrics.dropped)",
                self.batch_id,
                reason,
            )

    # -- folding and reading ------------------------------------------------------------------

    def _fold(self) -> None:
        # Called from record_file: whatever goes wrong here must not reach the caller (the
        # records are in the recorder's buffer already; only the in-memory summary suffers).
        try:
            with self._fold_lock:
                self._fold_locked()
        except Exception:
            log.exception("jobtrace: batch %s: folding file records failed", self.batch_id)

    def _fold_locked(self) -> None:
        pending = self._pending
        # Take only what is there now: records appended meanwhile by other threads stay
        # queued for the next fold (popleft and append on a deque are atomic).
        chunk = list(starmap(pending.popleft, repeat((), len(pending))))  # a loop in C
        if not chunk:
            return
        kept = self._kept
        if kept is not None:
            if len(kept) + len(chunk) <= self._keep:
                # Within the window the records themselves are the aggregates (summary()
                # reduces them exactly): a batch that stays small pays nothing to fold.
                kept.extend(chunk)
                return
            # Past the window: aggregate what was kept, release it, and read rows from the
            # store from now on.
            self._aggregates.add(kept)
            self._kept = None
        self._aggregates.add(chunk)

    def summary(self) -> BatchSummary:
        """The summary so far (TraceKit's fields; ``to_dict()`` for plain data).

        Every field is exact except, for a batch of more than ``keep_in_memory`` files, the
        median per file, which is then within 0.5 % of the exact median (relative error of
        a DDSketch-style sketch; see :mod:`jobtrace.batch.sketch`).
        """
        job = self._job
        start = job.start_time if job.status != "created" else None
        end = job.end_time if start is not None else None
        with self._fold_lock:
            self._fold_locked()
            kept = self._kept
            stats = (
                stats_of_items(kept, start, end)
                if kept is not None
                else self._aggregates.stats(start, end)
            )
        return BatchSummary.from_stats(self.batch_id, stats)

    def iter_file_metrics(self) -> Iterator[dict[str, Any]]:
        """Every recorded file as a dict (TraceKit's keys, plus ``bytes``), in record order,
        streamed: from memory for a batch of at most ``keep_in_memory`` files, else read
        back from the store a page at a time (after flushing this process's records).

        Raises :class:`~jobtrace.errors.StoreError` at once, naming the reason and what to
        do, when the files are no longer in memory and cannot be read back (recording is off,
        the sink is a server, or the store does not hold them all yet).
        """
        with self._fold_lock:
            self._fold_locked()
            kept = None if self._kept is None else list(self._kept)
            total = self._aggregates.total
        if kept is not None:
            return (file_metrics(dict(zip(_FIELDS, rec[1:], strict=True))) for rec in kept)
        from jobtrace.batch.stored import stored_file_metrics

        return stored_file_metrics(self.batch_id, total, self._keep)

    def get_file_metrics(self) -> list[dict[str, Any]]:
        """Every recorded file as a dict (TraceKit's keys, plus ``bytes``), in record order.

        A list of every file: for a large batch prefer :meth:`iter_file_metrics` or the
        exports, which stream.
        """
        return list(self.iter_file_metrics())

    def export_json(self, path: str | os.PathLike[str]) -> None:
        """Write ``{"summary": …, "files": […]}`` to ``path`` (replaced atomically), the
        files streamed (as :meth:`iter_file_metrics` reads them) so a batch of any size
        exports in bounded memory.

        Raises :class:`ExportError` naming the path when it cannot be written.
        """
        summary = self.summary().to_dict()
        rows = self.iter_file_metrics()
        _write_atomically(path, "wb", lambda out: write_json_export(summary, rows, out))

    def export_csv(self, path: str | os.PathLike[str]) -> None:
        """Write one CSV row per file (header first, even for an empty batch) to ``path``,
        streamed as :meth:`export_json` does.

        Raises :class:`ExportError` naming the path when it cannot be written.
        """
        rows = self.iter_file_metrics()
        _write_atomically(path, "w", lambda out: write_file_metrics_csv(rows, out))

    def __repr__(self) -> str:
        files = self._aggregates.total + len(self._kept or ()) + len(self._pending)
        return f"<BatchMetrics {self.batch_id} {files} files {self._job.status}>"


#: Rows encoded per write of a JSON export.
_JSON_ROWS_PER_WRITE = 1000


def write_json_export(
    summary: dict[str, Any], rows: Iterator[dict[str, Any]], out: IO[bytes]
) -> None:
    """Write ``{"summary": summary, "files": rows}`` as ``orjson`` with ``OPT_INDENT_2``
    would, byte for byte, but a thousand rows at a time instead of all at once."""
    import orjson

    def dumps(value: Any, indent: bytes) -> bytes:
        text: bytes = orjson.dumps(value, option=orjson.OPT_INDENT_2)
        return text.replace(b"\n", b"\n" + indent)

    out.write(b'{\n  "summary": ' + dumps(summary, b"  ") + b',\n  "files": [')
    first = True
    while True:
        page = list(itertools.islice(rows, _JSON_ROWS_PER_WRITE))
        if not page:
            break
        sep = b"\n    " if first else b",\n    "
        out.write(sep + b",\n    ".join(dumps(row, b"    ") for row in page))
        first = False
    out.write(b"]\n}\n" if first else b"\n  ]\n}\n")


def _write_atomically(
    path: str | os.PathLike[str], mode: str, write: Callable[[IO[Any]], Any]
) -> None:
    """Write through a temporary file in the same directory, then rename: a reader never
    sees half a file, and a failure leaves any earlier export in place."""
    target = Path(path)
    # One temporary file per call, not per process: two threads exporting to one path at
    # once must not write into (and rename away) the same file.
    temp = target.with_name(f".{target.name}.{os.getpid()}.{next(_export_number)}.tmp")
    try:
        newline = "" if "b" not in mode else None  # csv writes its own line endings
        with temp.open(mode, newline=newline) as out:
            write(out)
        temp.replace(target)
    except BaseException as exc:
        # Whatever stopped the export (the disk, a store read failing mid-stream, Ctrl-C)
        # leaves no temporary file behind.
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        reason = exc.strerror or str(exc)
        raise ExportError(f"cannot write batch metrics to {target}: {reason}") from exc
