"""``jobtrace.batch.map``: run a function over items on threads or processes, measuring each.

>>> import jobtrace.batch
>>> def parse(path):                                            # doctest: +SKIP
...     rows = read_rows(path)
...     jobtrace.batch.report(samples=len(rows), nbytes=os.path.getsize(path))
...     return rows
>>> results = jobtrace.batch.map(parse, paths, workers=8)      # doctest: +SKIP
>>> results.batch_id, results.failures                          # doctest: +SKIP

Each item is timed by itself in the worker that runs it, with its memory peak (per item in
a process worker, where the high-water mark is reset before each item on Linux; in a thread
it is the process's peak so far, which threads share) and the counts ``fn`` reports with
:func:`report`. The worker sends that outcome back with the result, and the caller's
process records it: one path for threads and processes alike, so the in-memory summary
sees every item, and nothing depends on a worker process flushing before it exits.

An exception from ``fn`` is recorded with its type and message and the batch goes on; its
result is ``None``. Raising :class:`Skip` records the item as skipped.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from jobtrace import _clock, _resources
from jobtrace.batch.progress import ProgressReporter, make_reporter
from jobtrace.batch.summary import BatchSummary
from jobtrace.batch.tracker import BatchMetrics
from jobtrace.errors import ConfigurationError
from jobtrace.model import error_type_name

__all__ = ["BatchResults", "ItemFailure", "Skip", "map", "report"]

log = logging.getLogger("jobtrace.batch")

T = TypeVar("T")
R = TypeVar("R")

#: Item names longer than this are cut (an item may be any object; its str can be huge).
_MAX_ITEM_NAME = 1000


# Named for what the caller means (`raise Skip("empty file")`), not "...Error": it is a signal.
class Skip(Exception):
    """Raise from ``fn`` to record the item as skipped; the message is the reason."""


class ItemFailure(NamedTuple):
    """Why one item of a batch failed."""

    error_type: str
    error_message: str


class BatchResults(list[R]):
    """The results of :func:`map`, in the order of the items (``None`` where an item
    failed or was skipped), plus the batch they were recorded as."""

    def __init__(self, values: Iterable[R], metrics: BatchMetrics) -> None:
        super().__init__(values)
        self.metrics = metrics
        #: Failed items by index: their error type and message.
        self.failures: dict[int, ItemFailure] = {}
        #: Skipped items by index: the reason given.
        self.skipped: dict[int, str] = {}

    @property
    def batch_id(self) -> str:
        """The batch's id, for ``jobtrace batch stats``."""
        return self.metrics.batch_id

    def summary(self) -> BatchSummary:
        return self.metrics.summary()


class _Counts:
    __slots__ = ("measurements", "memory_peak", "nbytes", "samples")

    def __init__(self) -> None:
        self.samples = self.measurements = self.nbytes = 0
        self.memory_peak: int | None = None


_local = threading.local()
_warned_outside = False


def report(
    *, samples: int = 0, measurements: int = 0, nbytes: int = 0, memory_peak: int | None = None
) -> None:
    """From inside ``fn``: add to the current item's samples, measurements and bytes.

    Calls add up. ``memory_peak`` (bytes) replaces the peak the runner measures, for work
    done elsewhere (a subprocess, a server). Outside an item of :func:`map` it does nothing
    (logged once).
    """
    counts: _Counts | None = getattr(_local, "counts", None)
    if counts is None:
        global _warned_outside
        if not _warned_outside:
            _warned_outside = True
            log.warning("jobtrace: batch.report() called outside a batch item; ignored")
        return
    counts.samples += samples
    counts.measurements += measurements
    counts.nbytes += nbytes
    if memory_peak is not None:
        counts.memory_peak = memory_peak


#: What a worker sends back: result, status, duration, samples, measurements, bytes,
#: error type, error message (or skip reason), memory peak in bytes.
Outcome = tuple[Any, str, float, int, int, int, str | None, str | None, int | None]


def _run_item(fn: Callable[[Any], Any], item: Any, own_peak: bool) -> Outcome:
    """Run ``fn(item)`` in a worker and measure it; never raises for ``fn``'s exceptions."""
    counts = _local.counts = _Counts()
    if own_peak:
        _resources.reset_peak()
    status, error_type, message, result = "success", None, None, None
    start = _clock.monotonic()
    try:
        result = fn(item)
    except Skip as exc:
        status, message = "skipped", str(exc)
    except Exception as exc:
        status, error_type, message = "error", error_type_name(exc), str(exc)
    duration = _clock.monotonic() - start
    _local.counts = None
    peak = counts.memory_peak
    if peak is None:
        peak = _resources.self_peak_kb() * 1024
    return (result, status, duration, counts.samples, counts.measurements, counts.nbytes,
            error_type, message, peak)  # fmt: skip


def item_name(item: Any) -> str:
    """How an item is named in the store: a path as itself, anything else as its ``str``
    (cut to 1,000 characters; ``record_file`` cleans what a store cannot hold)."""
    if type(item) is str:
        return item
    if isinstance(item, str | os.PathLike | bytes):
        return os.fsdecode(item)
    try:
        return str(item)[:_MAX_ITEM_NAME]
    except Exception:  # a broken __str__ must not fail the batch
        return f"<{type(item).__name__}>"


def _fn_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "batch")


# Named after Executor.map, which users know; it shadows the builtin inside this module only.
def map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int | None = None,
    processes: bool = False,
    name: str | None = None,
    batch_id: str | None = None,
    experiment: str | None = None,
    progress: bool | None = None,
) -> BatchResults[R | None]:
    """Run ``fn`` over ``items`` on ``workers`` threads (or processes) as one recorded batch.

    Returns the results in the order of ``items``; a failed or skipped item's result is
    ``None`` and its reason is in ``results.failures`` / ``results.skipped``. The batch is a
    job named ``name`` (default: ``fn``'s name); ``jobtrace batch stats <results.batch_id>``
    shows its summary later. ``progress``: ``None`` shows a bar when stderr is a terminal
    and a plain line every 10 s otherwise; ``False`` shows nothing.

    With ``processes=True``, ``fn``, the items and the results must be picklable (a
    module-level function, as for :class:`concurrent.futures.ProcessPoolExecutor`).
    """
    if processes:
        _check_picklable(fn)
    work = list(items)
    metrics = BatchMetrics(batch_id, name=name or _fn_name(fn), experiment=experiment)
    results: BatchResults[R | None] = BatchResults([None] * len(work), metrics)
    label = f"batch {metrics.batch_id} ({metrics.job.name})"
    reporter = make_reporter(progress, label, len(work), short_label=metrics.job.name)
    executor: cf.Executor = (
        cf.ProcessPoolExecutor(max_workers=workers)
        if processes
        else cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jobtrace-batch")
    )
    done = functools.partial(_on_done, work, results, reporter)
    with metrics:
        reporter.start()
        try:
            if processes:
                futures = [executor.submit(_run_item, fn, item, True) for item in work]
            else:
                # Each item runs in a copy of this context, where the batch is the current
                # job: spans and metrics fn records belong to it. (One copy per item: a
                # context cannot be entered by two threads at once.)
                futures = [
                    executor.submit(contextvars.copy_context().run, _run_item, fn, item, False)
                    for item in work
                ]
            for index, future in enumerate(futures):
                future.add_done_callback(functools.partial(done, index))
            cf.wait(futures)
        except BaseException:
            # Ctrl-C or a failure to submit: stop what has not started instead of waiting
            # for the whole batch; the job then ends as killed or failed.
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            executor.shutdown(wait=True)
            reporter.close()
    return results


def _check_picklable(fn: Callable[..., Any]) -> None:
    """Refuse at once what process workers cannot receive, instead of failing every item."""
    import pickle

    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise ConfigurationError(
            f"{_fn_name(fn)} cannot be sent to worker processes ({exc}); with "
            "processes=True pass a picklable function defined at module level"
        ) from exc


def _on_done(
    work: list[Any],
    results: BatchResults[Any],
    reporter: ProgressReporter,
    index: int,
    future: cf.Future[Outcome],
) -> None:
    """Record one finished item (called on the thread that finished it, or the executor's
    result thread for processes); must not raise, or the executor would only log it."""
    try:
        try:
            # One call (one lock) per item: _run_item returns fn's exceptions as data, so
            # result() raises only when the worker itself failed or the item was cancelled.
            result, status, duration, samples, measurements, nbytes, etype, message, peak = (
                future.result()
            )
        except cf.CancelledError:
            return
        except BaseException as exc:
            # A process that died, an unpicklable item or result.
            result, status, duration, samples, measurements, nbytes, peak = (
                None, "error", 0.0, 0, 0, 0, None
            )  # fmt: skip
            etype, message = error_type_name(exc), str(exc)
        if status == "success":
            results[index] = result
        elif status == "skipped":
            results.skipped[index] = message or ""
        else:
            results.failures[index] = ItemFailure(etype or "", message or "")
        results.metrics.record_file(
            item_name(work[index]),
            duration=duration,
            samples=samples,
            measurements=measurements,
            nbytes=nbytes,
            status=status,
            error_type=etype,
            error_message=message,
            memory_peak=peak,
        )
        reporter.advance(status == "error")
    except Exception:
        log.exception("jobtrace: recording batch item %d failed", index)
