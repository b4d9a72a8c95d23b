"""Phanos's API (0.0.x and 0.3.x), backed by jobtrace: switch by changing one import.

>>> import jobtrace.compat.phanos as phanos          # was: import phanos
>>> profiler = phanos.Profiler()                     # or the process's phanos.profiler
>>> profiler.config(job="shop", response_size_profile=True)
>>> @profiler.profile
... def checkout(cart): return sum(cart)
>>> checkout([1, 2])
3
>>> profiler.flush()                                 # handlers have had every record
True

Every public name of Phanos is here, in one namespace: ``profiler``/``phanos_profiler``,
``profile``, ``Profiler`` (``PhanosProfiler``), the metrics (``Histogram``, ``Summary``,
``Counter``, ``Info``, ``Gauge``, ``Enum``, ``TimeProfiler``, ``ResponseSize``,
``MetricWrapper``), the handlers (``StreamHandler``, ``LoggerHandler``,
``NamedLoggerHandler``, ``ImpProfHandler``, ``AsyncImpProfHandler``), the context tree
(``MethodTreeNode``, ``ContextTree``, ``Context``) and the dict-config helpers
(``import_external``, ``parse_arguments``, ``create_handlers``, ``create_async_handlers``).
Phanos's submodules (``phanos.publisher``, ``phanos.metrics``, ``phanos.config``,
``phanos.tree``, ``phanos.types``, ``phanos.log``, ``phanos.messaging``) are names of this
package itself, so ``phanos.publisher.StreamHandler`` keeps working, and a dict config's
``"class": "phanos.publisher.StreamHandler"`` resolves here.

The code lives in private submodules by concept (``_base``, ``_tree``, ``_metrics``,
``_handlers``, ``_engine``, ``_dictconfig``); this package re-exports their names. The few
names Phanos's users and tests replace on ``phanos.<submodule>`` (``Context``,
``BlockingPublisher``, ``AsyncioPublisher``, ``BlockingConnection``, ``aio_pika``,
``log_error_profiling``, ``NETWORK_ERRORS``, ``_now``) are looked up on this package when
used, so replacing them here reaches the code as it did when all was one module.

What jobtrace adds: every operation a metric records also goes into a jobtrace instrument
of the same name, labelled ``job`` (the metric's job), ``method`` (the context string) and
the metric's own labels, so the series reach the store and the merged ``/metrics`` —
durations in milliseconds, as Phanos records them. Several ``Profiler()`` instances each
keep their own metrics; those sharing a name share one series family, told apart by
``job``.

What differs on purpose (see docs/compat/phanos.md):

- A root call's records are handed to the handlers on a background thread, so a slow
  handler (RabbitMQ, a blocked stdout) never delays the call. ``profiler.flush()`` hands
  over what is queued; ``config(handle_inline=True)`` (or ``JOBTRACE_PHANOS_INLINE_HANDLERS
  =1``) hands them over before the root call returns, as Phanos does.
- Calls are measured without handlers too (the series feed ``/metrics``).
- Nothing raises into the profiled code: a hook, handler or metric operation that fails
  is logged and the call goes on. An integer value is accepted where Phanos wants a float.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import Any

from jobtrace.compat.phanos._base import (
    EXTERNAL_PREFIX,
    RESPONSE_SIZE,
    TIME_PROFILER,
    InstanceLoggerMixin,
    InvalidValueError,
    Record,
)

# Phanos's one private module-level name: its tests call phanos.config._to_callable.
from jobtrace.compat.phanos._dictconfig import _to_callable as _to_callable
from jobtrace.compat.phanos._dictconfig import (
    create_async_handlers,
    create_handlers,
    import_external,
    inherits_from,
    parse_arguments,
)
from jobtrace.compat.phanos._engine import AsyncExtProfiler, Profiler, SyncExtProfiler

# The queue a log message names (phanos._handler_thread.dropped).
from jobtrace.compat.phanos._engine import _handler_thread as _handler_thread
from jobtrace.compat.phanos._handlers import (
    NETWORK_ERRORS,
    AsyncBaseHandler,
    AsyncImpProfHandler,
    AsyncioPublisher,
    BaseHandler,
    BasePublisher,
    BlockingPublisher,
    ImpProfHandler,
    LoggerHandler,
    NamedLoggerHandler,
    OutputFormatter,
    StreamHandler,
    SyncBaseHandler,
    log_error_profiling,
)
from jobtrace.compat.phanos._metrics import (
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    MetricWrapper,
    ResponseSize,
    StoreOperationDecorator,
    Summary,
    TimeProfiler,
)
from jobtrace.compat.phanos._tree import Context, ContextTree, MethodTreeNode

__all__ = [
    "EXTERNAL_PREFIX",
    "NETWORK_ERRORS",
    "RESPONSE_SIZE",
    "TIME_PROFILER",
    "AsyncBaseHandler",
    "AsyncExtProfiler",
    "AsyncImpProfHandler",
    "AsyncioPublisher",
    "BaseHandler",
    "BasePublisher",
    "BlockingPublisher",
    "Context",
    "ContextTree",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "ImpProfHandler",
    "Info",
    "InstanceLoggerMixin",
    "InvalidValueError",
    "LoggerHandler",
    "MethodTreeNode",
    "MetricWrapper",
    "NamedLoggerHandler",
    "OutputFormatter",
    "PhanosProfiler",
    "Profiler",
    "Record",
    "ResponseSize",
    "StoreOperationDecorator",
    "StreamHandler",
    "Summary",
    "SyncBaseHandler",
    "SyncExtProfiler",
    "TimeProfiler",
    "config",
    "create_async_handlers",
    "create_handlers",
    "import_external",
    "inherits_from",
    "log",
    "log_error_profiling",
    "messaging",
    "metrics",
    "parse_arguments",
    "phanos_profiler",
    "profile",
    "profiler",
    "publisher",
    "tree",
    "types",
]


#: The clock of call durations (Phanos measures with ``datetime.now()``; tests replace it).
_now: Callable[[], datetime] = datetime.now


# -- module-level names --------------------------------------------------------------------------

PhanosProfiler = Profiler  # Phanos 0.0.x's class name

#: The process's profiler, and its ``profile`` decorator.
profiler = Profiler()
phanos_profiler = profiler
profile = profiler.profile

# Phanos's submodules are this package: ``phanos.publisher.StreamHandler``, ``phanos.metrics.
# Histogram``, ``phanos.config.create_handlers`` … all resolve here.
publisher: ModuleType = sys.modules[__name__]
metrics: ModuleType = publisher
tree: ModuleType = publisher
config: ModuleType = publisher
log: ModuleType = publisher
messaging: ModuleType = publisher
types: ModuleType = publisher


def __getattr__(name: str) -> Any:
    # pika's BlockingConnection and aio_pika, imported when first used (an optional extra);
    # a test replaces them here, where the publishers look them up.
    if name == "BlockingConnection":
        from pika import BlockingConnection

        return BlockingConnection
    if name == "aio_pika":
        return importlib.import_module("aio_pika")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
