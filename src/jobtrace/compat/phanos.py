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

Every public name of Phanos is here, in one module: ``profiler``/``phanos_profiler``,
``profile``, ``Profiler`` (``PhanosProfiler``), the metrics (``Histogram``, ``Summary``,
``Counter``, ``Info``, ``Gauge``, ``Enum``, ``TimeProfiler``, ``ResponseSize``,
``MetricWrapper``), the handlers (``StreamHandler``, ``LoggerHandler``,
``NamedLoggerHandler``, ``ImpProfHandler``, ``AsyncImpProfHandler``), the context tree
(``MethodTreeNode``, ``ContextTree``, ``Context``) and the dict-config helpers
(``import_external``, ``parse_arguments``, ``create_handlers``, ``create_async_handlers``).
Phanos's submodules (``phanos.publisher``, ``phanos.metrics``, ``phanos.config``,
``phanos.tree``, ``phanos.types``, ``phanos.log``, ``phanos.messaging``) are names of this
module itself, so ``phanos.publisher.StreamHandler`` keeps working, and a dict config's
``"class": "phanos.publisher.StreamHandler"`` resolves here.

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

import asyncio
import contextlib
import copy
import importlib
import inspect
import logging
import math
import os
import sys
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from datetime import datetime
from functools import wraps
from types import ModuleType
from typing import Any, ClassVar, Final, TypedDict, TypeVar

from jobtrace import _config
from jobtrace.instruments import kinds as _kinds
from jobtrace.instruments.calls import SIZE_BUCKETS
from jobtrace.instruments.handlers import format_record

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

_log = logging.getLogger("jobtrace.compat.phanos")

TIME_PROFILER: Final = "time_profiler"
RESPONSE_SIZE: Final = "response_size"
EXTERNAL_PREFIX: Final = "ext://"
#: Buckets of the time histograms exported to /metrics, in milliseconds.
MS_BUCKETS: Final = (5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1e3, 2.5e3, 5e3,
                     7.5e3, 1e4, math.inf)  # fmt: skip

LoggerLike = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
F = TypeVar("F", bound=Callable[..., Any])


class Record(TypedDict):
    """One measurement as handlers receive it (Phanos's record)."""

    item: str
    metric: str
    units: str
    value: tuple[str, Any]
    job: str
    method: str
    labels: dict[str, Any] | None


class InvalidValueError(Exception):
    """A metric operation was given a value of the wrong kind (logged, never raised out)."""


class InstanceLoggerMixin:
    """Phanos's logging helpers: ``self.debug(...)`` and friends, prefixed with a name."""

    def __init__(
        self,
        *args: Any,
        logged_name: str | None = None,
        logger: LoggerLike | None = None,
        logger_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.logged_name = logged_name or type(self).__qualname__
        self.logger: LoggerLike = logger or logging.getLogger(logger_name or self.logged_name)
        super().__init__(*args, **kwargs)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.logger.log(level, f"%s - {msg}", self.logged_name, *args, **kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    exception = error

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.log(logging.CRITICAL, msg, *args, **kwargs)

    fatal = critical


# -- the context tree ------------------------------------------------------------------------


class Context:
    """The context string of one profiled call: ``Owner:root.child.grandchild``."""

    def __init__(self, method: Callable[..., Any] | None = None) -> None:
        self.method = method
        self.value: str = getattr(method, "__name__", "") if method else ""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"'{self.value}'"

    def prepend_method_class(self) -> None:
        """Prefix the owner of a root call: the class that defines it, else its module."""
        method = self.method
        if inspect.isfunction(method):  # the usual root: the decorated function itself
            owner = _owners.get(method)
            if owner is None:
                owner = _owners[method] = _owner_of(method)
        else:
            owner = _owner_of(method)
        self.value = f"{owner}:{self.value}"


#: Series cells a metric keeps at hand.
_CELLS_CACHED: Final = 1024

#: Owners of root functions, found once each (inspect's lookups cost microseconds).
_owners: dict[Callable[..., Any], str] = {}


def _owner_of(meth: Any) -> str:
    if inspect.ismethod(meth):
        for cls in inspect.getmro(meth.__self__.__class__):
            if meth.__name__ in cls.__dict__:
                return cls.__name__
        meth = getattr(meth, "__func__", meth)
    if inspect.isfunction(meth):
        # The class is looked up by the qualified name in the defining module (the class
        # body has run by the time the method is first called).
        prefix = meth.__qualname__.split(".<locals>", 1)[0].rsplit(".", 1)[0]
        owner = getattr(inspect.getmodule(meth), prefix, None)
        if isinstance(owner, type):
            return owner.__name__
    objclass = getattr(meth, "__objclass__", None)  # slot wrappers and other descriptors
    if objclass is not None:
        return str(objclass.__name__)
    module = inspect.getmodule(meth)
    return module.__name__.rsplit(".", 1)[-1] if module else ""


class MethodTreeNode(InstanceLoggerMixin):
    """One profiled call in progress; ``ctx.value`` (``context``) is its context string."""

    def __init__(self, method: Callable[..., Any] | None = None, logger: Any = None) -> None:
        super().__init__(logged_name="phanos", logger=logger)
        self.children: list[MethodTreeNode] = []
        self.parent: MethodTreeNode | None = None
        self.ctx = Context(method)

    @property
    def context(self) -> str:
        """The context string (Phanos 0.0.x's name)."""
        return self.ctx.value

    def add_child(self, child: MethodTreeNode) -> MethodTreeNode:
        child.parent = self
        if self.ctx.method is None:
            child.ctx.prepend_method_class()
        else:
            child.ctx.value = f"{self.ctx.value}.{child.ctx.value}"
        self.children.append(child)
        return child


class ContextTree(InstanceLoggerMixin):
    """The root of the profiled calls; nodes are detached again when their call ends."""

    def __init__(self, logger: Any = None) -> None:
        super().__init__(logged_name="phanos", logger=logger or _log)
        self.root = MethodTreeNode(logger=self.logger)

    def delete_node(self, node: MethodTreeNode) -> bool:
        """Detach ``node``; its children move up to its parent."""
        if node is self.root:
            return False
        parent = node.parent
        if parent is not None:
            with contextlib.suppress(ValueError):  # detached already by a clear()
                parent.children.remove(node)
            parent.children.extend(node.children)
        for child in node.children:
            child.parent = parent
        node.children = []
        node.parent = None
        return True

    def find_and_delete_node(
        self, node: MethodTreeNode, root: MethodTreeNode | None = None
    ) -> bool:
        if node is (root or self.root) or node.parent is not None:
            return self.delete_node(node)
        return False

    def clear(self, root: MethodTreeNode | None = None) -> None:
        """Detach every node below ``root`` (the tree's root is kept)."""
        start = root or self.root
        for child in list(start.children):
            self.clear(child)
        if start is not self.root:
            self.delete_node(start)


#: The clock of call durations (Phanos measures with ``datetime.now()``; tests replace it).
_now: Callable[[], datetime] = datetime.now

#: The node of the profiled call running here, whichever profiler made it: the method a
#: metric operation called without a node is recorded against.
_active_node: ContextVar[MethodTreeNode | None] = ContextVar("phanos_active_node", default=None)


# -- metrics ------------------------------------------------------------------------------------

_KINDS: dict[str, type[_kinds.Metric]] = {
    "histogram": _kinds.Histogram,
    "summary": _kinds.Summary,
    "counter": _kinds.Counter,
    "info": _kinds.Info,
    "gauge": _kinds.Gauge,
    "enum": _kinds.Enum,
}
#: The jobtrace instrument behind each Phanos metric name (shared by same-named metrics of
#: several profilers, which the ``job`` label tells apart).
_series: dict[str, _kinds.Metric] = {}
_series_lock = threading.Lock()


def _series_for(metric: MetricWrapper) -> _kinds.Metric | None:
    # error_raised is always declared (empty when a profiler does not add it): profilers
    # that differ only in error_raised_label then share one series family.
    fixed = ("job", "method", "error_raised")
    labels = [*fixed, *sorted(n for n in metric.label_names if n not in fixed)]
    with _series_lock:
        series = _series.get(metric.name)
        if (
            series is not None
            and list(series.label_names) == labels
            and series.metric == metric.metric
            # still the registered one (a registry cleared in tests forgets it)
            and (series.registry is None or series.registry.get(metric.name) is series)
        ):
            return series
        registry = None if series is None else series.registry
        if series is not None and registry is not None and registry.get(metric.name) is series:
            registry.unregister(series)  # its label names changed: declared anew
        options: dict[str, Any] = {"documentation": f"Phanos metric {metric.name}"}
        kind = _KINDS[metric.metric]
        if kind is _kinds.Histogram:
            options["buckets"] = (
                SIZE_BUCKETS if metric.units == "B" else MS_BUCKETS if metric.units == "mS"
                else _kinds.DEFAULT_BUCKETS
            )  # fmt: skip
        if kind is _kinds.Enum:
            options["states"] = sorted(getattr(metric, "states", ()) or ("unknown",))
        try:
            series = kind(metric.name, metric.job, units=metric.units, labels=labels, **options)
        except Exception as exc:  # the name is taken by another instrument: not exported
            _log.warning("phanos metric %r is not exported to /metrics: %s", metric.name, exc)
            series = kind(
                metric.name, metric.job, units=metric.units, labels=labels, registry=None, **options
            )
        _series[metric.name] = series
        return series


def _export(
    metric: MetricWrapper, method: str, labels: dict[str, Any], op: str, value: Any
) -> None:
    """Apply one recorded operation to the metric's jobtrace series (never raises)."""
    try:
        # The series and its cells are cached on the metric, keyed by what decides them,
        # and checked to be still registered (a registry cleared in tests forgets them).
        key = (metric.name, metric.metric, frozenset(metric.label_names))
        cache = metric._exported
        series = cache[1] if cache is not None and cache[0] == key else None
        if series is None or (
            series.registry is not None and series.registry.get(metric.name) is not series
        ):
            series = _series_for(metric)
            if series is None:
                return
            cache = metric._exported = (key, series, {})
        assert cache is not None
        values = {k: str(v) for k, v in labels.items()}
        values.setdefault("job", metric.job or "")
        values.setdefault("method", method)
        values.setdefault("error_raised", "")
        cell_key = tuple(values[name] for name in series.label_names)
        cell = cache[2].get(cell_key)
        if cell is None:
            cell = series.labels(*cell_key)
            if len(cache[2]) < _CELLS_CACHED:  # label values from unbounded data stay uncached
                cache[2][cell_key] = cell
        if op == "info":
            cell.info({str(k): str(v) for k, v in value.items()})
        elif op in ("observe", "inc", "dec", "set", "state"):
            getattr(cell, op)(value)
    except Exception:
        _log.debug("phanos metric %r: series update failed", metric.name, exc_info=True)


def _number(metric: Any, value: Any, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValueError("Float >= 0" if non_negative else "Float")
    if non_negative and value < 0:
        raise InvalidValueError("Float >= 0")
    return float(value)


class StoreOperationDecorator:
    """Turns a metric operation into Phanos's checked, recorded form:
    ``metric.op(value, current_node=None, label_values=None)``.

    The labels must be the metric's label names (an ``error_raised`` label is filled in
    from the exception being handled); the operation validates the value and appends
    ``(operation, value)``; the context string of ``current_node`` (or of the profiled call
    running here) is recorded with it. A bad label set or value is logged and dropped."""

    def __init__(self, operation: Callable[..., None]) -> None:
        self.operation = operation

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return lambda value, current_node=None, label_values=None: self.wrapper(
            instance, value, current_node, label_values
        )

    def wrapper(
        self,
        instance: MetricWrapper,
        value: Any,
        current_node: MethodTreeNode | None = None,
        label_values: dict[str, Any] | None = None,
    ) -> None:
        labels = dict(label_values or {})
        if "error_raised" in instance.label_names:
            labels["error_raised"] = sys.exc_info()[0] is not None
        if not instance.eq_labels(set(labels)):
            instance.error(
                f"{self.operation.__qualname__!r}: metric {instance.name!r} expected labels: "
                f"{instance.label_names}, labels given: {set(labels)}"
            )
            return
        node = current_node if current_node is not None else _active_node.get()
        method = node.ctx.value if node is not None else ""
        with instance._lock:
            instance.label_values.append(labels)
            instance.method.append(method)
            stored = len(instance.values)
            try:
                self.operation(instance, value, node, labels)
            except Exception as exc:  # a bad value; or a custom operation's bug: never raised
                if isinstance(exc, InvalidValueError):
                    instance.error(
                        f"{self.operation.__qualname__!r}: metric {instance.name!r} accepts "
                        f"only values {exc}"
                    )
                else:
                    instance.logger.exception("metric %r: operation failed", instance.name)
                del instance.values[stored:]
                instance.method.pop()
                instance.label_values.pop()
                return
            if len(instance.values) != stored + 1:
                instance.warning(f"metric {instance.name!r} did not store one value")
                del instance.values[stored:]
                instance.method.pop()
                instance.label_values.pop()
                return
            op, recorded = instance.values[-1]
        _export(instance, method, labels, op, recorded)


class MetricWrapper(InstanceLoggerMixin):
    """Base of Phanos's metrics: a name, job, units and label names, and the operations
    recorded since the profiler last handed them to the handlers (``values``, ``method``,
    ``label_values``, read by :meth:`to_records` and emptied by :meth:`cleanup`)."""

    metric: str = ""
    _kind: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        job: str = "",
        units: str = "",
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        self.name = name
        self.job = job
        self.units = units
        self.label_names: set[str] = set(labels) if labels else set()
        self.values: list[tuple[str, Any]] = []
        self.method: list[str] = []
        self.label_values: list[dict[str, Any]] = []
        self.metric = self._kind
        self._lock = threading.RLock()
        #: (what decides the series, the jobtrace series, its cells by label values)
        self._exported: tuple[Any, _kinds.Metric, dict[tuple[str, ...], Any]] | None = None
        # Phanos 0.0.x's operation table: store_operation(operation=...) looks ops up here.
        self.operations: dict[str, Callable[..., Any]] = {}
        self.default_operation = ""
        super().__init__(logged_name="phanos", logger=logger or _log)

    # Phanos 0.0.x spelled the lists with a leading underscore.
    @property
    def _values(self) -> list[tuple[str, Any]]:
        return self.values

    @property
    def _label_values(self) -> list[dict[str, Any]]:
        return self.label_values

    def set_job(self, job: str) -> None:
        self.job = job

    def to_records(self) -> list[Record] | None:
        """The recorded operations as records, or None if the lists disagree in length."""
        if not len(self.method) == len(self.values) == len(self.label_values):
            self.error(f"metric {self.name!r}: one of records is incomplete, skipping publishing")
            return None
        return [
            {
                "item": method.split(":")[0],
                "metric": self.metric,
                "units": self.units,
                "job": self.job,
                "method": method,
                "labels": labels,
                "value": value,
            }
            for method, value, labels in zip(
                self.method, self.values, self.label_values, strict=True
            )
        ]

    def eq_labels(self, labels: set[str]) -> bool:
        return labels == self.label_names

    def cleanup(self) -> None:
        """Forget the recorded operations (after they were handed on)."""
        self.values.clear()
        self.label_values.clear()
        self.method.clear()

    def store_operation(
        self,
        method: str = "",
        operation: str | None = None,
        value: Any = None,
        label_values: dict[str, Any] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Phanos 0.0.x: record ``operation`` (default :attr:`default_operation`) from
        :attr:`operations` against the context string ``method``."""
        op = self.operations.get(operation or self.default_operation)
        if op is None:
            self.error(f"metric {self.name!r}: unknown operation {operation!r}")
            return
        labels = dict(label_values or {})
        if "error_raised" in self.label_names:  # added by a 0.3-style profiler's config
            labels.setdefault("error_raised", sys.exc_info()[0] is not None)
        if not self.eq_labels(set(labels)):
            self.error(
                f"metric {self.name!r}: expected labels {self.label_names}, got {set(labels)}"
            )
            return
        with self._lock:
            stored = len(self.values)
            try:
                op(value, args, kwargs)
            except Exception as exc:  # a bad value; or a custom operation's bug: never raised
                if isinstance(exc, InvalidValueError):
                    self.error(f"metric {self.name!r}: {operation!r} accepts only values {exc}")
                else:
                    self.logger.exception("metric %r: operation %r failed", self.name, operation)
                del self.values[stored:]
                return
            added = self.values[stored:]
            self.method.extend([method] * len(added))
            self.label_values.extend(dict(labels) for _ in added)
        for op_name, recorded in added:
            _export(self, method, labels, op_name, recorded)


Check = Callable[[Any, Any], Any]


def _recorded(op: str, check: Check) -> StoreOperationDecorator:
    """A recorded operation appending ``(op, check(metric, value))``."""

    def operation(self: MetricWrapper, value: Any, node: Any, labels: Any) -> None:
        self.values.append((op, check(self, value)))

    operation.__qualname__ = operation.__name__ = op
    return StoreOperationDecorator(operation)


def _raw(op: str, check: Check) -> Callable[..., None]:
    """Phanos 0.0.x's inner operation (``_observe``, ``_inc`` …) that a custom operation
    calls: it appends the value; :meth:`MetricWrapper.store_operation` records the rest."""

    def operation(self: MetricWrapper, value: Any, *args: Any, **kwargs: Any) -> None:
        self.values.append((op, check(self, value)))

    return operation


def _positive(metric: Any, value: Any) -> float:
    return _number(metric, value, True)


def _dict(metric: Any, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValueError("Dict")
    return value


class Histogram(MetricWrapper):
    _kind = "histogram"
    observe = _recorded("observe", _number)
    _observe = _raw("observe", _number)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operations, self.default_operation = {"observe": self._observe}, "observe"


class Summary(Histogram):
    _kind = "summary"


class Counter(MetricWrapper):
    _kind = "counter"
    inc = _recorded("inc", _positive)
    _inc = _raw("inc", _positive)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operations, self.default_operation = {"inc": self._inc}, "inc"


class Gauge(MetricWrapper):
    _kind = "gauge"
    inc = _recorded("inc", _positive)
    dec = _recorded("dec", _positive)
    set = _recorded("set", _number)
    _inc = _raw("inc", _positive)
    _dec = _raw("dec", _positive)
    _set = _raw("set", _number)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.operations = {"inc": self._inc, "dec": self._dec, "set": self._set}
        self.default_operation = "inc"


class Info(MetricWrapper):
    _kind = "info"
    info_ = _recorded("info", _dict)
    _info = _raw("info", _dict)

    def __init__(
        self,
        name: str,
        job: str = "",
        units: str | None = None,
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(name, job, units or "info", labels, logger)
        self.operations, self.default_operation = {"info": self._info}, "info"


def _known_state(metric: Any, value: Any) -> Any:
    if value not in metric.states:
        raise InvalidValueError(f"in {metric.states}")
    return value


class Enum(MetricWrapper):
    _kind = "enum"

    def __init__(
        self,
        name: str,
        job: str = "",
        states: Iterable[str] = (),
        units: str | None = None,
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        self.states = set(states)
        super().__init__(name, job, units or "enum", labels, logger)
        self.operations, self.default_operation = {"state": self._state}, "state"

    state = _recorded("state", _known_state)
    _state = _raw("state", _known_state)


class TimeProfiler(Histogram):
    """Durations of profiled calls, in milliseconds (Phanos's unit ``mS``)."""

    def __init__(
        self,
        name: str,
        job: str = "",
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(name, job, "mS", labels, logger)
        self.operations, self.default_operation = {"stop": self._stop}, "stop"
        self._starts: list[float] = []

    def stop(
        self,
        start: datetime | float | None = None,
        current_node: MethodTreeNode | None = None,
        label_values: dict[str, Any] | None = None,
    ) -> None:
        """Record the milliseconds since ``start`` (a ``datetime`` as Phanos passes it, or
        a ``time.perf_counter()`` reading)."""
        if start is not None and not isinstance(start, int | float):  # a datetime
            elapsed = (_now() - start).total_seconds() * 1000.0
        else:
            began = start if start is not None else (self._starts.pop() if self._starts else None)
            if began is None:
                self.error(f"metric {self.name!r}: stop without a start")
                return
            elapsed = (time.perf_counter() - began) * 1000.0
        self.observe(round(elapsed, 2), current_node, label_values)

    def start(self, *args: Any, **kwargs: Any) -> None:
        """Phanos 0.0.x: remember now for the next ``stop``."""
        self._starts.append(time.perf_counter())

    def _stop(self, *args: Any, **kwargs: Any) -> None:
        began = self._starts.pop() if self._starts else None
        if began is None:
            raise InvalidValueError("a start before stop")
        self.values.append(("observe", round((time.perf_counter() - began) * 1000.0, 2)))

    def cleanup(self) -> None:
        super().cleanup()


class ResponseSize(Histogram):
    """Size of a root call's result in bytes (``sys.getsizeof``, as Phanos measures it)."""

    def __init__(
        self,
        name: str,
        job: str = "",
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(name, job, "B", labels, logger)
        self.operations, self.default_operation = {"rec": self._rec}, "rec"

    def rec(
        self,
        value: Any,
        current_node: MethodTreeNode | None = None,
        label_values: dict[str, Any] | None = None,
    ) -> None:
        self.observe(float(sys.getsizeof(value)), current_node, label_values)

    def _rec(self, value: Any, *args: Any, **kwargs: Any) -> None:
        self.values.append(("observe", float(sys.getsizeof(value))))


# -- handlers --------------------------------------------------------------------------------


class OutputFormatter:
    """Phanos's one line per record."""

    @staticmethod
    def record_to_str(name: str, record: Record) -> str:
        return format_record(name, dict(record))


class BaseHandler(ABC):  # noqa: B024 - Phanos's BaseHandler is instantiable
    """A named receiver of records."""

    def __init__(self, handler_name: str) -> None:
        self.handler_name = handler_name


class SyncBaseHandler(BaseHandler, ABC):
    @abstractmethod
    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        """Receive the records of one metric (``profiler_name`` is the metric's name)."""


class AsyncBaseHandler(BaseHandler, ABC):
    @classmethod
    @abstractmethod
    async def create(cls, handler_name: str, *args: Any, **kwargs: Any) -> AsyncBaseHandler:
        """Build the handler on the running event loop."""

    @abstractmethod
    async def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        """Receive the records of one metric on the event loop."""


class StreamHandler(SyncBaseHandler):
    """Writes one line per record to ``output`` (default ``sys.stdout``)."""

    def __init__(self, handler_name: str, output: Any = None) -> None:
        super().__init__(handler_name)
        self.output = output if output is not None else sys.stdout
        self.formatter = OutputFormatter()
        self._lock = threading.Lock()

    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        text = "".join(self.formatter.record_to_str(profiler_name, r) + "\n" for r in records)
        with self._lock:
            self.output.write(text)
            self.output.flush()


_phanos_logger_lock = threading.Lock()


def _phanos_logger() -> logging.Logger:
    """Phanos's default ``PHANOS`` logger, printing to stdout (one stream handler, however
    many LoggerHandlers are made)."""
    logger = logging.getLogger("PHANOS")
    with _phanos_logger_lock:
        if not any(getattr(h, "_jobtrace_phanos", False) for h in logger.handlers):
            logger.setLevel(logging.DEBUG)
            out = logging.StreamHandler(sys.stdout)
            out._jobtrace_phanos = True  # type: ignore[attr-defined]
            logger.addHandler(out)
    return logger


class LoggerHandler(SyncBaseHandler):
    """Logs a metric's records as one message at ``level`` (default DEBUG)."""

    def __init__(self, handler_name: str, logger: Any = None, level: int = logging.DEBUG) -> None:
        super().__init__(handler_name)
        self.logger = logger if logger is not None else _phanos_logger()
        self.level = level
        self.formatter = OutputFormatter()

    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        lines = [self.formatter.record_to_str(profiler_name, r) for r in records]
        self.logger.log(self.level, "\n".join(lines))


class NamedLoggerHandler(LoggerHandler):
    """A :class:`LoggerHandler` of ``logging.getLogger(logger_name)``."""

    def __init__(self, handler_name: str, logger_name: str, level: int = logging.DEBUG) -> None:
        super().__init__(handler_name, logging.getLogger(logger_name), level)


def log_error_profiling(name: str, formatter: Any, logger: Any, records: list[Record]) -> None:
    """Log the records at DEBUG when one of them carries ``error_raised`` true."""
    if not records or (records[0].get("labels") or {}).get("error_raised") is None:
        return
    if any(str((r.get("labels") or {}).get("error_raised")) == "True" for r in records):
        logger.debug("\n".join(formatter.record_to_str(name, r) for r in records))


NETWORK_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, OSError)


def _network_errors() -> tuple[type[BaseException], ...]:
    try:
        import pika.exceptions
        from pika.adapters.utils.connection_workflow import AMQPConnectorException
    except ImportError:  # pragma: no cover - the rabbitmq extra is not installed
        return NETWORK_ERRORS
    return (pika.exceptions.AMQPError, AMQPConnectorException, *NETWORK_ERRORS)


def _lazy(name: str) -> Any:
    """``BlockingConnection`` and ``aio_pika``, looked up when used (a test may have
    replaced them on this module) and imported only then: pika is an optional extra."""
    found = globals().get(name)
    if found is not None:
        return found
    return __getattr__(name)


def __getattr__(name: str) -> Any:
    if name == "BlockingConnection":
        from pika import BlockingConnection

        return BlockingConnection
    if name == "aio_pika":
        return importlib.import_module("aio_pika")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BasePublisher(ABC):
    """Publishes records as Phanos does: one JSON message per metric's records, to a
    ``fanout`` exchange (``profiling``), routed by the records' job — so an IMP_prof
    consumer reads a jobtrace service and a Phanos service alike. Nothing connects until
    :meth:`connect` or the first :meth:`publish`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5672,
        user: str | None = None,
        password: str | None = None,
        heartbeat: int = 47,
        timeout: float = 23,
        retry_delay: float = 0.137,
        retry: int = 3,
        exchange_name: str = "profiling",
        exchange_type: Any = "fanout",
        logger: Any = None,
        **kwargs: Any,
    ) -> None:
        import pika

        self.logger = logger or _log
        self.connection: Any = None
        self.channel: Any = None
        self.exchange_name = exchange_name
        self.exchange_type = str(getattr(exchange_type, "value", exchange_type))
        self.retry = max(0, retry)
        credentials = pika.PlainCredentials(username=user or "guest", password=password or "guest")
        self.connection_parameters = pika.ConnectionParameters(
            host=host, port=port, credentials=credentials,
            heartbeat=heartbeat, connection_attempts=max(1, self.retry), retry_delay=retry_delay,
            blocked_connection_timeout=timeout, **kwargs,
        )  # fmt: skip

    def __bool__(self) -> bool:
        return self.is_connected() and self._is_bound()

    def is_connected(self) -> bool:
        return not (self.connection is None or self.connection.is_closed)

    def _is_bound(self) -> bool:
        return not (self.channel is None or self.channel.is_closed)

    @abstractmethod
    def connect(self) -> Any:
        """Connect and declare the exchange."""

    @abstractmethod
    def close(self) -> Any:
        """Close the channel and the connection."""

    @abstractmethod
    def publish(self, records: list[Record]) -> Any:
        """Send one message of ``records``; whether it was sent."""


class BlockingPublisher(BasePublisher):
    """:class:`BasePublisher` over pika's ``BlockingConnection``."""

    def close(self) -> None:
        if self.is_connected():
            if self._is_bound():
                self.channel.close()
            self.connection.close()
        self.connection = self.channel = None

    def connect(self) -> None:
        self.connection = _lazy("BlockingConnection")(self.connection_parameters)
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=self.exchange_name, exchange_type=self.exchange_type)

    def reconnect(self, silent: bool = False) -> None:
        """Close and connect again; ``silent`` logs a failure instead of raising it."""
        self.close()
        if not silent:
            self.connect()
            return
        try:
            self.connect()
        except _network_errors() as exc:
            self.logger.warning("phanos publisher: reconnecting failed: %r", exc)

    def check_or_rebound(self) -> None:
        if not self:
            self.reconnect()

    def publish(self, records: list[Record]) -> bool:
        """Up to ``1 + retry`` attempts, reconnecting after each failure (on the handler
        thread by default, so the waits never hold a request)."""
        import orjson

        if not records:
            return True
        body = orjson.dumps(records, default=repr)
        self.check_or_rebound()
        for _ in range(1 + self.retry):
            try:
                self.channel.basic_publish(
                    exchange=self.exchange_name, body=body, routing_key=records[0]["job"]
                )
                return True
            except _network_errors() as exc:
                self.logger.warning("phanos publisher: exchange %r refused a message: %r",
                                    self.exchange_name, exc)  # fmt: skip
                time.sleep(float(self.connection_parameters.retry_delay))
                self.reconnect(silent=True)
        return False


class AsyncioPublisher(BasePublisher):
    """:class:`BasePublisher` over ``aio_pika`` (imported when connecting)."""

    exchange: Any = None

    async def close(self) -> None:
        if self.is_connected():
            if self._is_bound():
                await self.channel.close()
            await self.connection.close()
        self.connection = self.channel = None

    async def connect(self) -> None:
        p = self.connection_parameters
        self.connection = await _lazy("aio_pika").connect_robust(
            host=p.host, port=p.port, login=p.credentials.username,
            password=p.credentials.password, heartbeat=p.heartbeat,
        )  # fmt: skip
        self.channel = await self.connection.channel()
        self.exchange = await self.channel.declare_exchange(
            name=self.exchange_name, type=self.exchange_type
        )

    async def reconnect(self, silent: bool = False) -> None:
        await self.close()
        if not silent:
            await self.connect()
            return
        try:
            await self.connect()
        except _network_errors() as exc:
            self.logger.warning("phanos publisher: reconnecting failed: %r", exc)

    async def check_or_rebound(self) -> None:
        if not self:
            await self.reconnect()

    async def publish(self, records: list[Record]) -> bool:
        import orjson

        if not records:
            return True
        message = _lazy("aio_pika").Message(
            body=orjson.dumps(records, default=repr), content_type="application/json"
        )
        await self.check_or_rebound()
        for _ in range(1 + self.retry):
            try:
                await self.exchange.publish(message=message, routing_key=records[0]["job"])
                return True
            except _network_errors() as exc:
                self.logger.warning("phanos publisher: exchange %r refused a message: %r",
                                    self.exchange_name, exc)  # fmt: skip
                await asyncio.sleep(float(self.connection_parameters.retry_delay))
                await self.reconnect(silent=True)
        return False


def _logger_arg(logger: Any) -> Any:
    return logging.getLogger(logger) if isinstance(logger, str) else (logger or _log)


class _RabbitMQHandler(BaseHandler):
    """What :class:`ImpProfHandler` and :class:`AsyncImpProfHandler` share: Phanos's
    RabbitMQ settings, handed to a publisher of the handler's kind. Only when the broker
    is first checked differs (on construction, or in ``await create(...)``)."""

    publisher: Any

    def __init__(
        self,
        handler_name: str,
        host: str = "127.0.0.1",
        port: int = 5672,
        user: str | None = None,
        password: str | None = None,
        heartbeat: int = 47,
        timeout: float = 23,
        retry_delay: float = 0.137,
        retry: int = 3,
        exchange_name: str = "profiling",
        exchange_type: str = "fanout",
        logger: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler_name)
        self.logger = _logger_arg(logger)
        self.publisher = self._new_publisher(
            host, port, user, password, heartbeat, timeout, retry_delay, retry, exchange_name,
            exchange_type, self.logger, **kwargs,
        )  # fmt: skip
        self._check_broker()
        self.formatter = OutputFormatter()

    def _new_publisher(self, *args: Any, **kwargs: Any) -> BasePublisher:
        raise NotImplementedError

    def _check_broker(self) -> None:
        """Connect once and close (RuntimeError if the broker cannot be reached)."""

    def _unreachable(self, handler_type: str, err: BaseException) -> RuntimeError:
        self.logger.error(f"{handler_type} cannot connect to RabbitMQ because of {err}")
        return RuntimeError("Cannot connect to RabbitMQ")


class ImpProfHandler(_RabbitMQHandler, SyncBaseHandler):
    """Publishes records to RabbitMQ as Phanos does (see :class:`BlockingPublisher`). The
    broker is checked once when the handler is made: RuntimeError if it cannot be reached."""

    def _new_publisher(self, *args: Any, **kwargs: Any) -> BasePublisher:
        return BlockingPublisher(*args, **kwargs)

    def _check_broker(self) -> None:
        try:
            self.publisher.connect()
        except _network_errors() as err:
            raise self._unreachable("ImpProfHandler", err) from err
        self.publisher.close()

    def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        self.publisher.publish(records)
        log_error_profiling(profiler_name, self.formatter, self.logger, records)


class AsyncImpProfHandler(_RabbitMQHandler, AsyncBaseHandler):
    """:class:`ImpProfHandler` for asyncio services: ``await AsyncImpProfHandler.create(...)``
    (needs ``aio_pika``, imported when connecting)."""

    def _new_publisher(self, *args: Any, **kwargs: Any) -> BasePublisher:
        return AsyncioPublisher(*args, **kwargs)

    @classmethod
    async def create(cls, handler_name: str, *args: Any, **kwargs: Any) -> AsyncImpProfHandler:
        instance = cls(handler_name, *args, **kwargs)
        await instance._post_init()
        return instance

    async def _post_init(self) -> None:
        # No aio_pika installed: it cannot connect either.
        errors: tuple[type[BaseException], ...] = (*_network_errors(), ImportError)
        try:
            await self.publisher.connect()
        except errors as err:
            raise self._unreachable("AsyncImpProfHandler", err) from err
        await self.publisher.close()

    async def handle(self, records: list[Record], profiler_name: str = "profiler") -> None:
        await self.publisher.publish(records)
        log_error_profiling(profiler_name, self.formatter, self.logger, records)


# -- handing records over --------------------------------------------------------------------

#: One metric's records for the handlers: (handlers, metric name, records).
Batch = tuple[tuple[Any, ...], str, list[Record]]


#: Batches queued before the handler thread is woken early (else it wakes every 0.5 s).
_WAKE_AT: Final = 1024


class _HandlerThread:
    """The queue between root calls and the sync handlers, drained by one daemon thread."""

    capacity: Final = 100_000

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.queue: deque[Batch] = deque()
        self.wake = threading.Event()
        self.lock = threading.Lock()  # one round at a time: the thread or a flush()
        self.start_lock = threading.Lock()  # never the round's lock: a caller must not wait
        self.thread: threading.Thread | None = None
        self.dropped = 0
        self._warned: set[int] = set()

    def submit(self, batches: list[Batch]) -> None:
        """Queue batches (never blocks, never raises; past the capacity they are counted)."""
        if len(self.queue) >= self.capacity:
            if not self.dropped:
                _log.warning(
                    "phanos: %d records wait for the handlers; further ones are dropped and "
                    "counted (phanos._handler_thread.dropped)", self.capacity,
                )  # fmt: skip
            self.dropped += len(batches)
            return
        queue = self.queue
        queue.extend(batches)
        if self.thread is None:
            with self.start_lock:
                if self.thread is None:
                    self.thread = threading.Thread(
                        target=self._run, name="jobtrace-phanos-handlers", daemon=True
                    )
                    self.thread.start()
        elif len(queue) >= _WAKE_AT > len(queue) - len(batches):
            self.wake.set()  # once per crossing: Event.set() takes a lock and wakes a thread

    def _run(self) -> None:
        while True:
            self.wake.wait(0.5)
            self.wake.clear()
            with self.lock:
                self._round()

    def _round(self) -> None:
        for _ in range(len(self.queue)):
            handlers, name, records = self.queue.popleft()
            for handler in handlers:
                try:
                    handler.handle(records, name)
                except Exception:
                    if id(handler) not in self._warned:
                        self._warned.add(id(handler))
                        _log.exception("phanos handler %r failed", handler.handler_name)

    def flush(self, timeout: float | None = 10.0) -> bool:
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            self._round()
            return True
        finally:
            self.lock.release()


_handler_thread = _HandlerThread()
_pending_tasks: set[asyncio.Task[Any]] = set()


def _call_hook(hook: Any, name: str, *args: Any) -> None:
    if not callable(hook):
        return
    try:
        hook(*args)
    except Exception:
        _log.exception("phanos: profiler.%s raised; the profiled call goes on", name)


class Profiler(InstanceLoggerMixin):
    """Phanos's profiler: metrics, handlers, the four hooks and ``@profile``.

    Nothing is measured before :meth:`config` (or one of its siblings). Each root call's
    records are handed to the handlers when it returns — on a background thread unless
    configured with ``handle_inline=True``."""

    RECORDS_ERR_LIMIT: ClassVar[int] = 3000
    RECORDS_LEN_LIMIT: ClassVar[int] = 100

    def __init__(self) -> None:
        self.metrics: dict[str, MetricWrapper] = {}
        self.handlers: dict[str, Any] = {}
        self.job = ""
        self.handle_records = False
        self._error_raised_label = True
        self.resp_size_profile: ResponseSize | None = None
        self.time_profile: TimeProfiler | None = None
        self.before_func: Any = None
        self.after_func: Any = None
        self.before_root_func: Any = None
        self.after_root_func: Any = None
        self.profile_ext: SyncExtProfiler | AsyncExtProfiler | None = None
        self.handle_inline = os.environ.get(_config.ENV_PHANOS_INLINE, "") in ("1", "true", "yes")
        self.tree = ContextTree()
        self.curr_node: ContextVar[MethodTreeNode] = ContextVar("curr_node")
        super().__init__(logged_name="phanos", logger=_log)

    # -- configuration ------------------------------------------------------------------------

    def _config(
        self,
        logger: Any = None,
        job: str = "",
        time_profile: bool = True,
        request_size_profile: bool = False,
        response_size_profile: bool = False,
        handle_records: bool = True,
        error_raised_label: bool = True,
        **kwargs: Any,
    ) -> None:
        # Phanos 0.0.x's spellings, and jobtrace's one addition.
        time_profile = kwargs.pop("should_time_profile", time_profile)
        response_size_profile = kwargs.pop("should_resp_size_profile", response_size_profile)
        handle_records = kwargs.pop("should_handle_records", handle_records)
        if "handle_inline" in kwargs:
            self.handle_inline = bool(kwargs.pop("handle_inline"))
        self.logger = _logger_arg(logger)
        self.job = job
        self.handle_records = handle_records
        self.error_raised_label = error_raised_label
        self.tree.logger = self.logger
        if request_size_profile or response_size_profile:
            if request_size_profile:
                warnings.warn(
                    "request_size_profile is deprecated, use response_size_profile",
                    DeprecationWarning, stacklevel=3,
                )  # fmt: skip
            self.create_response_size_profiler()
        if time_profile:
            self.create_time_profiler()

    def config(self, logger: Any = None, job: str = "", time_profile: bool = True,
               request_size_profile: bool = False, response_size_profile: bool = False,
               handle_records: bool = True, error_raised_label: bool = True,
               **kwargs: Any) -> None:  # fmt: skip
        """Configure for sync handlers (Phanos 0.3's arguments; 0.0.x's ``should_*``
        spellings; ``handle_inline=True`` to hand records over before a root call returns)."""
        self._config(logger, job, time_profile, request_size_profile, response_size_profile,
                     handle_records, error_raised_label, **kwargs)  # fmt: skip
        self.profile_ext = SyncExtProfiler(self)

    def async_config(self, logger: Any = None, job: str = "", time_profile: bool = True,
                     request_size_profile: bool = False, response_size_profile: bool = False,
                     handle_records: bool = True, error_raised_label: bool = True,
                     **kwargs: Any) -> None:  # fmt: skip
        """Configure for async handlers too (their ``handle`` runs on the event loop)."""
        self._config(logger, job, time_profile, request_size_profile, response_size_profile,
                     handle_records, error_raised_label, **kwargs)  # fmt: skip
        self.profile_ext = AsyncExtProfiler(self)

    def _dict_cfg_sync(self, settings: dict[str, Any]) -> None:
        if "logger" in settings:
            self.logger = logging.getLogger(settings["logger"])
        if "job" not in settings:
            self.logger.error("Job argument not found in config dictionary")
            raise KeyError("Job argument not found in config dictionary")
        self.job = settings["job"]
        if "handle_inline" in settings:
            self.handle_inline = bool(settings["handle_inline"])
        if settings.get("time_profile"):
            self.create_time_profiler()
        if settings.get("request_size_profile") or settings.get("response_size_profile"):
            if settings.get("request_size_profile"):
                warnings.warn(
                    "request_size_profile is deprecated, use response_size_profile",
                    DeprecationWarning, stacklevel=3,
                )  # fmt: skip
            self.create_response_size_profiler()
        self.error_raised_label = settings.get("error_raised_label", True)
        self.handle_records = settings.get("handle_records", True)
        self.tree.logger = self.logger

    def dict_config(self, settings: dict[str, Any]) -> None:
        """Configure from a dict (like ``logging.config.dictConfig``); async handlers in it
        raise ValueError (use :meth:`async_dict_config`)."""
        self._dict_cfg_sync(settings)
        self.profile_ext = SyncExtProfiler(self)
        for handler in create_handlers(settings.get("handlers", {})).values():
            self.add_handler(handler)

    async def async_dict_config(self, settings: dict[str, Any]) -> None:
        self._dict_cfg_sync(settings)
        self.profile_ext = AsyncExtProfiler(self)
        for handler in (await create_async_handlers(settings.get("handlers", {}))).values():
            self.add_handler(handler)

    def needs_profiling(self) -> bool:
        """Measure only when configured to handle records and some metric exists (Phanos
        also wants a handler; here the series feed /metrics even without one)."""
        return bool(self.handle_records and self.metrics)

    @property
    def error_raised_label(self) -> bool:
        return self._error_raised_label

    @error_raised_label.setter
    def error_raised_label(self, value: bool) -> None:
        self._error_raised_label = value
        for metric in self.metrics.values():
            if value:
                metric.label_names.add("error_raised")
            else:
                metric.label_names.discard("error_raised")

    # -- metrics and handlers ---------------------------------------------------------------

    def create_time_profiler(self) -> None:
        self.time_profile = TimeProfiler(TIME_PROFILER, job=self.job, logger=self.logger)
        self.add_metric(self.time_profile)

    def create_response_size_profiler(self) -> None:
        self.resp_size_profile = ResponseSize(RESPONSE_SIZE, job=self.job, logger=self.logger)
        self.add_metric(self.resp_size_profile)

    def add_metric(self, metric: MetricWrapper) -> None:
        """Add (or replace, by name) a metric whose records this profiler hands over."""
        if self.error_raised_label:
            metric.label_names.add("error_raised")
        self.metrics[metric.name] = metric

    def delete_metric(self, item: str) -> None:
        """Stop handing ``item``'s records over (its /metrics series stay)."""
        if self.metrics.pop(item, None) is None:
            self.warning(f"delete_metric: metric {item} do not exist")
            return
        if item == TIME_PROFILER:
            self.time_profile = None
        if item == RESPONSE_SIZE:
            self.resp_size_profile = None

    def delete_metrics(
        self, rm_time_profile: bool = False, rm_resp_size_profile: bool = False
    ) -> None:
        for name in list(self.metrics):
            if (name != TIME_PROFILER or rm_time_profile) and (
                name != RESPONSE_SIZE or rm_resp_size_profile
            ):
                self.delete_metric(name)

    def get_records_count(self) -> int:
        return sum(len(metric.values) for metric in list(self.metrics.values()))

    def add_handler(self, handler: Any) -> None:
        """Add (or replace, by ``handler_name``) a handler; the profiler must be configured,
        and an async handler needs :meth:`async_config`."""
        if self.profile_ext is None:
            raise RuntimeError("Profiler not configured yet")
        if isinstance(handler, AsyncBaseHandler) and not isinstance(
            self.profile_ext, AsyncExtProfiler
        ):
            raise ValueError(
                f"Handler {handler.handler_name!r} is asynchronous, but profiler is synchronous"
            )
        self.handlers[handler.handler_name] = handler

    def delete_handler(self, handler_name: str) -> None:
        if self.handlers.pop(handler_name, None) is None:
            self.warning(f"delete_handler: handler {handler_name!r} do not exist")

    def delete_handlers(self) -> None:
        self.handlers.clear()

    # Phanos 0.0.x's names.
    addHandler = add_handler
    deleteHandler = delete_handler

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Hand every queued record to the handlers now; False if not done in ``timeout``."""
        return _handler_thread.flush(timeout)

    def clear(self) -> None:
        """Forget the recorded operations and the tree (not while calls are running)."""
        for metric in self.metrics.values():
            metric.cleanup()
        self.tree.clear()
        self.curr_node.set(self.tree.root)

    # -- the call tree ----------------------------------------------------------------------

    @property
    def current_node(self) -> MethodTreeNode:
        """The node of the profiled call running here (Phanos 0.0.x: ``.context``)."""
        return self.curr_node.get(self.tree.root)

    def set_curr_node(self, func: Callable[..., Any]) -> MethodTreeNode:
        node = self.curr_node.get(self.tree.root).add_child(MethodTreeNode(func, self.logger))
        self.curr_node.set(node)
        return node

    def delete_curr_node(self, current_node: MethodTreeNode) -> None:
        self.curr_node.set(current_node.parent or self.tree.root)
        self.tree.find_and_delete_node(current_node)

    def measure_execution_start(self) -> datetime | None:
        return _now() if self.time_profile else None

    def before_func_profiling(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> datetime | None:
        if self.curr_node.get(self.tree.root).parent is self.tree.root:
            _call_hook(self.before_root_func, "before_root_func", func, args, kwargs)
        _call_hook(self.before_func, "before_func", func, args, kwargs)
        return self.measure_execution_start()

    def after_function_profiling(
        self, result: Any, start_ts: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        node = self.curr_node.get(self.tree.root)
        if self.time_profile and start_ts is not None:
            self.time_profile.stop(start=start_ts, current_node=node, label_values={})
        _call_hook(self.after_func, "after_func", result, args, kwargs)
        if node.parent is self.tree.root:
            if self.resp_size_profile:
                self.resp_size_profile.rec(value=result, current_node=node, label_values={})
            _call_hook(self.after_root_func, "after_root_func", result, args, kwargs)

    # -- handing over -----------------------------------------------------------------------

    def drain(self) -> list[tuple[str, list[Record]]]:
        """Take every metric's records (and empty them), as (metric name, records)."""
        out = []
        for metric in list(self.metrics.values()):
            with _lock_of(metric):
                records = metric.to_records()
                metric.cleanup()
            if records:
                out.append((metric.name, records))
        return out

    def hand_over(self) -> None:
        """After a root call: queue the records for the handlers — the sync ones on the
        background thread, the async ones as tasks on the caller's event loop."""
        handlers = tuple(self.handlers.values())
        drained = self.drain()
        if not handlers or not drained:
            return
        sync = tuple(h for h in handlers if not isinstance(h, AsyncBaseHandler))
        if sync:
            _handler_thread.submit([(sync, name, records) for name, records in drained])
        asynchronous = [h for h in handlers if isinstance(h, AsyncBaseHandler)]
        if asynchronous:
            _schedule(asynchronous, drained)

    # -- decorating -------------------------------------------------------------------------

    def profile(self, func: F) -> F:
        """Profile ``func`` (sync or ``async``; above or below staticmethod/classmethod)."""
        if isinstance(func, staticmethod | classmethod):
            return type(func)(self.profile(func.__func__))

        @wraps(func)
        def sync_inner(*args: Any, **kwargs: Any) -> Any:
            ext = self.profile_ext
            if ext is None:  # not configured: nothing is measured
                return func(*args, **kwargs)
            return ext.sync_inner(func, *args, **kwargs)

        @wraps(func)
        async def async_inner(*args: Any, **kwargs: Any) -> Any:
            ext = self.profile_ext
            if ext is None:
                return await func(*args, **kwargs)
            return await ext.async_inner(func, *args, **kwargs)

        return async_inner if inspect.iscoroutinefunction(func) else sync_inner  # type: ignore[return-value]


def _schedule(handlers: list[Any], drained: list[tuple[str, list[Record]]]) -> None:
    """Async handlers run as tasks on the caller's event loop (none running: skipped)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _log.warning("phanos: async handlers need a running event loop; records not handled")
        return

    async def run() -> None:
        for name, records in drained:
            for handler in handlers:
                try:
                    await handler.handle(records, name)
                except Exception:
                    _log.exception("phanos handler %r failed", handler.handler_name)

    task = loop.create_task(run())
    _pending_tasks.add(task)  # keep a reference until it is done
    task.add_done_callback(_pending_tasks.discard)


class _ExtProfiler(InstanceLoggerMixin):
    """How a profiled call runs: the parts shared by the sync and async configurations."""

    def __init__(self, base_profiler: Profiler) -> None:
        self.base_profiler = base_profiler
        super().__init__(logger=base_profiler.logger)

    def _enter(self, func: Callable[..., Any], args: Any, kwargs: Any) -> tuple[Any, Any, Any]:
        base = self.base_profiler
        node = base.set_curr_node(func)
        token = _active_node.set(node)
        try:
            start = base.before_func_profiling(func, args, kwargs)
        except Exception:  # a hook's failure is logged there; this is a bug guard
            start = None
        return node, token, start

    def _finish(self, result: Any, start: Any, args: Any, kwargs: Any) -> None:
        try:
            self.base_profiler.after_function_profiling(result, start, args, kwargs)
        except Exception:
            self.logger.exception("phanos: recording a profiled call failed")

    def _leave(self, node: Any, token: Any) -> None:
        try:
            self.base_profiler.delete_curr_node(node)
        finally:
            _active_node.reset(token)

    def _due(self, node: Any) -> bool:
        base = self.base_profiler
        return bool(
            node.parent is base.tree.root or base.get_records_count() >= Profiler.RECORDS_LEN_LIMIT
        )

    def _hand_over(self) -> None:
        try:
            self.base_profiler.hand_over()
        except Exception:
            self.logger.exception("phanos: handing records over failed")

    def sync_inner(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.base_profiler.needs_profiling():
            return func(*args, **kwargs)
        node, token, start = self._enter(func, args, kwargs)
        try:
            try:
                result = func(*args, **kwargs)
            except BaseException:
                # Inside the except block the exception is "being handled", so metrics with
                # an error_raised label record True.
                self._finish(None, start, args, kwargs)
                self._after_sync(node)
                raise
            self._finish(result, start, args, kwargs)
            self._after_sync(node)
            return result
        finally:
            self._leave(node, token)

    async def async_inner(
        self, func: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        if not self.base_profiler.needs_profiling():
            return await func(*args, **kwargs)
        node, token, start = self._enter(func, args, kwargs)
        try:
            try:
                result = await func(*args, **kwargs)
            except BaseException:
                self._finish(None, start, args, kwargs)
                if self._due(node):
                    await self._after_async()
                raise
            self._finish(result, start, args, kwargs)
            if self._due(node):
                await self._after_async()
            return result
        finally:
            self._leave(node, token)

    def _after_sync(self, node: Any) -> None:
        if self._due(node):
            if self.base_profiler.handle_inline:
                self.handle_records_clear()
            else:
                self._hand_over()

    def handle_records_clear(self) -> None:
        raise NotImplementedError

    async def _after_async(self) -> None:
        if self.base_profiler.handle_inline:
            self.handle_records_clear()
        else:
            self._hand_over()


def _lock_of(metric: Any) -> Any:
    """The metric's lock (taking its records and emptying them is one step for the
    operations of other threads), or none for a metric-like object without one."""
    lock = getattr(metric, "_lock", None)
    return lock if lock is not None else contextlib.nullcontext()


def _handle(handler: Any, records: list[Record], name: str) -> Any:
    """``handler.handle(records, name)``; a failure is logged, never raised."""
    try:
        return handler.handle(records, name)
    except Exception:
        _log.exception("phanos handler %r failed", getattr(handler, "handler_name", handler))
        return None


class SyncExtProfiler(_ExtProfiler):
    """Profiling after :meth:`Profiler.config`: records handed over after each root call."""

    def handle_records_clear(self) -> None:
        """Hand every metric's records to every handler now, on this thread."""
        base = self.base_profiler
        for metric in list(base.metrics.values()):
            with _lock_of(metric):
                records = metric.to_records()
                metric.cleanup()
            if records:
                for handler in list(base.handlers.values()):
                    _handle(handler, records, metric.name)

    def force_handle_records_clear(self) -> None:
        self.handle_records_clear()
        self.base_profiler.tree.clear()


class AsyncExtProfiler(_ExtProfiler):
    """Profiling after :meth:`Profiler.async_config`: async roots hand over; sync calls
    only guard against records piling up (as Phanos does)."""

    async def handle_records_clear(self) -> None:  # type: ignore[override]
        """Hand every metric's records to every handler now (async ones awaited)."""
        base = self.base_profiler
        for metric in list(base.metrics.values()):
            with _lock_of(metric):
                records = metric.to_records()
                metric.cleanup()
            if records:
                for handler in list(base.handlers.values()):
                    done = _handle(handler, records, metric.name)
                    if inspect.isawaitable(done):
                        try:
                            await done
                        except Exception:
                            self.logger.exception("phanos handler %r failed", handler.handler_name)

    async def force_handle_records_clear(self) -> None:
        await self.handle_records_clear()
        self.base_profiler.tree.clear()

    def _after_sync(self, node: Any) -> None:
        base = self.base_profiler
        if base.get_records_count() >= Profiler.RECORDS_ERR_LIMIT:
            self.error("Too many records, clearing records")
            for metric in base.metrics.values():
                metric.cleanup()

    async def _after_async(self) -> None:
        if self.base_profiler.handle_inline:
            await self.handle_records_clear()
        else:
            self._hand_over()


# -- dict configuration ----------------------------------------------------------------------


def inherits_from(child: Any, parent: type) -> bool:
    """Whether the class ``child`` derives from a class named like ``parent``."""
    return inspect.isclass(child) and parent.__name__ in [c.__name__ for c in child.__mro__[1:]]


def import_external(full_name: str) -> Any:
    """The object a dotted path names (``"sys.stdout"``). Phanos's own paths
    (``phanos.publisher.StreamHandler``) name this module's classes."""
    parts = full_name.split(".")
    if parts[0] == "phanos":
        return getattr(sys.modules[__name__], parts[-1])
    obj: Any = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def _to_callable(elem: Any) -> Any:
    return import_external(elem) if isinstance(elem, str) else elem


def parse_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments with ``ext://dotted.name`` strings replaced by the objects they name."""
    return {
        name: import_external(arg[len(EXTERNAL_PREFIX):])
        if isinstance(arg, str) and arg.startswith(EXTERNAL_PREFIX) else arg
        for name, arg in arguments.items()
    }  # fmt: skip


def create_handlers(configs: dict[str, Any]) -> dict[str, Any]:
    """Sync handlers from their dict configs (``class``, ``handler_name``, arguments)."""
    handlers = {}
    for ref, conf in configs.items():
        kwargs = copy.deepcopy(conf)
        cls = _to_callable(kwargs.pop("class"))
        if inherits_from(cls, AsyncBaseHandler):
            raise ValueError("Cannot create async handler in sync profiler")
        handlers[ref] = cls(**parse_arguments(kwargs))
    return handlers


async def create_async_handlers(configs: dict[str, Any]) -> dict[str, Any]:
    """Sync and async handlers from their dict configs (async ones via ``create``)."""
    handlers = {}
    for ref, conf in configs.items():
        kwargs = copy.deepcopy(conf)
        cls = _to_callable(kwargs.pop("class"))
        arguments = parse_arguments(kwargs)
        if inherits_from(cls, AsyncBaseHandler):
            handlers[ref] = await cls.create(**arguments)
        else:
            handlers[ref] = cls(**arguments)
    return handlers


# -- module-level names --------------------------------------------------------------------------

PhanosProfiler = Profiler  # Phanos 0.0.x's class name

#: The process's profiler, and its ``profile`` decorator.
profiler = Profiler()
phanos_profiler = profiler
profile = profiler.profile

# Phanos's submodules are this module: ``phanos.publisher.StreamHandler``, ``phanos.metrics.
# Histogram``, ``phanos.config.create_handlers`` … all resolve here.
publisher: ModuleType = sys.modules[__name__]
metrics: ModuleType = publisher
tree: ModuleType = publisher
config: ModuleType = publisher
log: ModuleType = publisher
messaging: ModuleType = publisher
types: ModuleType = publisher
