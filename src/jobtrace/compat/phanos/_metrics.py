"""Phanos's metrics, each also exported to a jobtrace instrument of the same name."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar

import jobtrace.compat.phanos as _api  # what a test may replace there is looked up there
from jobtrace.compat.phanos._base import (
    MS_BUCKETS,
    InstanceLoggerMixin,
    InvalidValueError,
    LoggerLike,
    Record,
    _log,
)
from jobtrace.compat.phanos._tree import _CELLS_CACHED, MethodTreeNode, _active_node
from jobtrace.instruments import kinds as _kinds
from jobtrace.instruments.calls import SIZE_BUCKETS

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
    #: Operations of Phanos 0.0.x's table, each done by the method named ``_<operation>``;
    #: the first is the default.
    _raw_operations: ClassVar[tuple[str, ...]] = ()

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
        self.operations: dict[str, Callable[..., Any]] = {
            op: getattr(self, f"_{op}") for op in self._raw_operations
        }
        self.default_operation = self._raw_operations[0] if self._raw_operations else ""
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
    _raw_operations = ("observe",)


class Summary(Histogram):
    _kind = "summary"


class Counter(MetricWrapper):
    _kind = "counter"
    inc = _recorded("inc", _positive)
    _inc = _raw("inc", _positive)
    _raw_operations = ("inc",)


class Gauge(MetricWrapper):
    _kind = "gauge"
    inc = _recorded("inc", _positive)
    dec = _recorded("dec", _positive)
    set = _recorded("set", _number)
    _inc = _raw("inc", _positive)
    _dec = _raw("dec", _positive)
    _set = _raw("set", _number)
    _raw_operations = ("inc", "dec", "set")


class Info(MetricWrapper):
    _kind = "info"
    info_ = _recorded("info", _dict)
    _info = _raw("info", _dict)
    _raw_operations = ("info",)

    def __init__(
        self,
        name: str,
        job: str = "",
        units: str | None = None,
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(name, job, units or "info", labels, logger)


def _known_state(metric: Any, value: Any) -> Any:
    if value not in metric.states:
        raise InvalidValueError(f"in {metric.states}")
    return value


class Enum(MetricWrapper):
    _kind = "enum"
    _raw_operations = ("state",)

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

    state = _recorded("state", _known_state)
    _state = _raw("state", _known_state)


class TimeProfiler(Histogram):
    """Durations of profiled calls, in milliseconds (Phanos's unit ``mS``)."""

    _raw_operations = ("stop",)

    def __init__(
        self,
        name: str,
        job: str = "",
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(name, job, "mS", labels, logger)
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
            elapsed = (_api._now() - start).total_seconds() * 1000.0
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

    _raw_operations = ("rec",)

    def __init__(
        self,
        name: str,
        job: str = "",
        labels: Iterable[str] | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(name, job, "B", labels, logger)

    def rec(
        self,
        value: Any,
        current_node: MethodTreeNode | None = None,
        label_values: dict[str, Any] | None = None,
    ) -> None:
        self.observe(float(sys.getsizeof(value)), current_node, label_values)

    def _rec(self, value: Any, *args: Any, **kwargs: Any) -> None:
        self.values.append(("observe", float(sys.getsizeof(value))))
