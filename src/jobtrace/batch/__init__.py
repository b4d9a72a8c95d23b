"""Batch jobs: TraceKit's ``BatchMetrics``, persisted, and a parallel runner that measures.

>>> import jobtrace.batch
>>> results = jobtrace.batch.map(parse, paths, workers=8)    # doctest: +SKIP
>>> with jobtrace.BatchMetrics() as metrics:                 # doctest: +SKIP
...     metrics.record_file("a.csv", duration=0.25, samples=1200)

A batch is a job; each file or item is an ``ITEM`` record in the store, so
``jobtrace batch stats <batch id>`` and ``jobtrace batch items <batch id>`` read it back
after the process has gone, with the same summary :meth:`BatchMetrics.summary` gives.
"""

from __future__ import annotations

from jobtrace.batch.runner import BatchResults, ItemFailure, Skip, map, report
from jobtrace.batch.summary import (
    BatchSummary,
    ErrorBreakdown,
    ThroughputStats,
    TimingStats,
)
from jobtrace.batch.tracker import BatchMetrics, ExportError

__all__ = [
    "BatchMetrics",
    "BatchResults",
    "BatchSummary",
    "ErrorBreakdown",
    "ExportError",
    "ItemFailure",
    "Skip",
    "ThroughputStats",
    "TimingStats",
    "map",
    "report",
    "stored_summary",
]


def stored_summary(batch_id: str, *, url: str | None = None) -> BatchSummary | None:
    """The summary of batch ``batch_id`` as the store holds it (after flushing this
    process's records), computed in SQL; ``None`` if nothing is recorded under that id.

    ``url`` defaults to the configured store (``JOBTRACE_URL`` or the local SQLite file).
    """
    from jobtrace import _config
    from jobtrace.recorder import flush
    from jobtrace.store import Store

    flush()
    with Store(url or _config.current().url, create=False) as store:
        return store.batch_summary(batch_id)
