"""Helpers for the lossless tests: producing records in a tight loop, counting what a store
holds, and a store sink that cannot keep up (or hangs), importable by child processes."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import sqlalchemy as sa

import jobtrace
from jobtrace.batch import BatchMetrics
from jobtrace.jobs import Job
from jobtrace.model import Record
from jobtrace.sinks.store import StoreSink
from jobtrace.store import Store, schema

KINDS = ("metric", "span", "item")
_TABLES = {"metric": schema.metrics, "span": schema.spans, "item": schema.items}
#: Seconds the ``slow://`` sink sleeps before each batch (read when the sink opens).
ENV_DELAY = "JOBTRACE_TEST_SINK_DELAY"


def produce(kind: str, n: int, *, job_id: str | None = None) -> Job:
    """Record ``n`` records of ``kind`` from a tight loop inside one job; returns the job
    (for batch items, the batch's own job)."""
    if kind == "item":
        batch = BatchMetrics(job_id)
        batch.start()
        record_file = batch.record_file
        for i in range(n):
            record_file(f"f{i}", duration=0.001)
        batch.finish()
        return batch.job
    with jobtrace.job(f"lossless-{kind}", job_id=job_id) as job:
        if kind == "metric":
            log_metric = jobtrace.log_metric
            for step in range(n):
                log_metric("loss", 0.5, step)
        else:
            trace = jobtrace.Trace
            for _ in range(n):
                with trace("step"):
                    pass
    return job


def stored(url: str, kind: str, job_id: str) -> int:
    """Rows of ``kind`` the store at ``url`` holds for ``job_id``."""
    table = _TABLES[kind]
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table).where(table.c.job_id == job_id)
            return int(conn.execute(query).scalar_one())
    finally:
        store.close()


class SlowSink:
    """``slow:///path.db``: a SQLite store sink that sleeps before every batch, as a sink
    that cannot keep up (or, with a delay of hours, one that hangs) does."""

    def __init__(self, url: str) -> None:
        self.delay = float(os.environ.get(ENV_DELAY, "0"))
        self._inner = StoreSink("sqlite://" + url.split("://", 1)[1])

    def write(self, records: Sequence[Record]) -> None:
        time.sleep(self.delay)
        self._inner.write(records)

    def close(self) -> None:
        self._inner.close()
