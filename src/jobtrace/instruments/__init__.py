"""Service profiling for Prometheus: instruments, ``@profile``, handlers and exposition.

>>> import jobtrace
>>> from jobtrace.instruments import Counter, Gauge
>>> orders = Counter("orders", job="shop", labels=["status"])
>>> in_flight = Gauge("requests_in_flight", mode="live-sum")
>>> @jobtrace.profile
... def checkout(cart):
...     orders.labels(status="ok").inc()

Each process keeps its instruments' state in memory (cheap cells, no lock, no I/O). The
recorder's writer thread sends the series that changed through the recorder to the store
on every flush tick, where readers merge the processes
(:func:`~jobtrace.instruments.merge.merge_series`); a single service can also expose its
own state through :class:`InstrumentCollector`. The profiler hands each root call's records
to handlers (stream, logger, RabbitMQ) on a background thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobtrace.instruments._cells import drops
from jobtrace.instruments.calls import RESPONSE_SIZE, TIME_PROFILER, Profiler, profile, profiler
from jobtrace.instruments.handlers import (
    BaseHandler,
    LoggerHandler,
    NamedLoggerHandler,
    StreamHandler,
)
from jobtrace.instruments.kinds import (
    DEFAULT_BUCKETS,
    GAUGE_MODES,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Metric,
    Summary,
)
from jobtrace.instruments.registry import REGISTRY, InstrumentRegistry, process_source, publish

if TYPE_CHECKING:
    from jobtrace.instruments.exposition import InstrumentCollector, render
    from jobtrace.instruments.merge import MergedSeries, merge_series
    from jobtrace.instruments.rabbitmq import RabbitMQHandler

__all__ = [
    "DEFAULT_BUCKETS",
    "GAUGE_MODES",
    "REGISTRY",
    "RESPONSE_SIZE",
    "TIME_PROFILER",
    "BaseHandler",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "InstrumentCollector",
    "InstrumentRegistry",
    "LoggerHandler",
    "MergedSeries",
    "Metric",
    "NamedLoggerHandler",
    "Profiler",
    "RabbitMQHandler",
    "StreamHandler",
    "Summary",
    "drops",
    "merge_series",
    "process_source",
    "profile",
    "profiler",
    "publish",
    "render",
]

_LAZY = {
    "InstrumentCollector": "jobtrace.instruments.exposition",
    "render": "jobtrace.instruments.exposition",
    "MergedSeries": "jobtrace.instruments.merge",
    "merge_series": "jobtrace.instruments.merge",
    "RabbitMQHandler": "jobtrace.instruments.rabbitmq",
}


def __getattr__(name: str) -> Any:
    # pika and prometheus_client load only when their parts are used.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
