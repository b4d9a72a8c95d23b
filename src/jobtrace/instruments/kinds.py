"""Prometheus-style instruments with Phanos's constructor and operations.

>>> from jobtrace.instruments import Counter, Histogram
>>> requests = Counter("requests", job="shop", units="requests", labels=["method"])
>>> requests.inc(1, {"method": "GET"})               # Phanos's form: label_values dict
>>> requests.labels(method="GET").inc()              # the fast form: a bound series
>>> latency = Histogram("latency_seconds", job="shop", units="s", buckets=(0.01, 0.1, 1))
>>> latency.observe(0.042)

An instrument is declared once with its label names; each combination of label values is
a series held by a small *cell* (see :mod:`jobtrace.instruments._cells`). ``labels(...)``
returns that cell: keep it and call it, that is the cheapest path. An instrument without
labels forwards its operations straight to its one cell (bound at construction, so there
is no extra call).

Mistakes in the declaration (a bad name, a bad or reserved label name, an Enum without
states, unsorted buckets) raise :class:`~jobtrace.errors.ConfigurationError` at once.
Mistakes while recording (wrong label names, a negative increment, an unknown state) are
dropped, counted in :data:`jobtrace.instruments.drops` and logged once.

A custom metric subclasses one of these and calls the inherited operations, as Phanos
documents; ``cleanup()`` is called after the profiler handed a root call's records on.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from jobtrace.errors import ConfigurationError
from jobtrace.instruments import _cells, _prometheus
from jobtrace.instruments._cells import (
    Cell,
    CounterCell,
    EnumCell,
    FunctionGaugeCell,
    GaugeCell,
    HistogramCell,
    InfoCell,
    SummaryCell,
    drops,
)
from jobtrace.limits import MAX_SERIES_PER_NAME

if TYPE_CHECKING:
    from jobtrace.instruments.registry import InstrumentRegistry

__all__ = [
    "DEFAULT_BUCKETS",
    "GAUGE_MODES",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "Metric",
    "Summary",
]

#: prometheus_client's default buckets (seconds), ending with +Inf.
DEFAULT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf,
)  # fmt: skip

#: How a gauge's values from several processes combine into one (see merge.py).
GAUGE_MODES: Final = ("sum", "max", "min", "last", "live-sum")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_USE_DEFAULT: Any = object()

_default_registry: InstrumentRegistry | None = None


def _registry_default() -> InstrumentRegistry:
    global _default_registry
    if _default_registry is None:
        from jobtrace.instruments.registry import REGISTRY

        _default_registry = REGISTRY
    return _default_registry


def _label_names(
    name: str, labels: Iterable[str] | None, reserved: Iterable[str]
) -> tuple[str, ...]:
    if labels is None:
        return ()
    if isinstance(labels, str):
        raise ConfigurationError(
            f"instrument {name!r}: labels must be a collection of names, not the string "
            f"{labels!r}; write labels=[{labels!r}]"
        )
    # Phanos declares labels as a set: sort those so the order is the same in every process.
    names = tuple(sorted(labels)) if isinstance(labels, set | frozenset) else tuple(labels)
    forbidden = set(reserved)
    for label in names:
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ConfigurationError(
                f"instrument {name!r}: bad label name {label!r}; use letters, digits and "
                "underscores, not starting with a digit"
            )
        if label.startswith("__") or label in forbidden:
            raise ConfigurationError(
                f"instrument {name!r}: label name {label!r} is reserved; choose another"
            )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"instrument {name!r}: duplicate label names in {names!r}")
    return names


class _Dropped:
    """What :meth:`Metric._cell_for` returns for label values that do not match: the drop
    is already counted there, so every recording operation on it does nothing. One object
    that answers them all keeps each operation a single call, with no None check."""

    __slots__ = ()

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    inc = dec = set = set_to_current_time = observe = info = state = _nothing


_DROPPED: Final = _Dropped()


class Metric:
    """Base of the instruments: a name, Phanos's ``job`` and ``units``, label names, and
    one cell per combination of label values."""

    #: Phanos's name for the instrument type (``"counter"``, ``"histogram"`` …).
    metric: ClassVar[str] = ""
    #: Label names this type reserves for its own exposition.
    _reserved: ClassVar[tuple[str, ...]] = ()
    #: The operations forwarded to the single cell of an instrument without labels.
    _operations: ClassVar[tuple[str, ...]] = ()

    name: str
    job: str
    units: str
    documentation: str
    label_names: tuple[str, ...]

    def __init__(
        self,
        name: str,
        job: str = "",
        units: Any = "",
        labels: Iterable[str] | None = None,
        logger: logging.Logger | None = None,
        *,
        documentation: str = "",
        registry: Any = _USE_DEFAULT,
        labelnames: Iterable[str] | None = None,
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        _labelvalues: Any = None,
    ) -> None:
        if not isinstance(name, str):
            raise ConfigurationError(f"bad instrument name {name!r}: it must be a string")
        from jobtrace.instruments.registry import InstrumentRegistry

        options = {"labelnames": labelnames, "namespace": namespace, "subsystem": subsystem,
                   "unit": unit}  # fmt: skip
        foreign = (
            registry is not _USE_DEFAULT
            and registry is not None
            and not isinstance(registry, InstrumentRegistry)
        )
        if _prometheus.is_prometheus_form(job, units, (labels, logger), options, foreign):
            # prometheus_client's signature: (name, documentation, labelnames, namespace, …)
            documentation = documentation or job
            job = ""
            if units is not None and not isinstance(units, str):
                labels, units = units, ""
            if labelnames is not None:
                labels = labelnames
            units = unit or units
            name = _prometheus.full_name(self.metric, name, namespace, subsystem, unit)
            if registry is _USE_DEFAULT:
                _prometheus.expose_default()
        elif self.metric == "counter":
            # prometheus_client's convention: the exposition adds `_total` itself.
            name = name.removesuffix("_total")
        if not _NAME.match(name):
            raise ConfigurationError(
                f"bad instrument name {name!r}: use letters, digits, underscores and colons, "
                "not starting with a digit"
            )
        if foreign:
            registry = _prometheus.adapt_registry(registry)  # a CollectorRegistry
        self.name = name
        self.job = job or ""
        self.units = units or ""
        self.documentation = documentation or name
        self.logger = logger or _cells.log
        self.label_names = _label_names(name, labels, self._reserved)
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        if not self.label_names:
            self._children[()] = self._new_cell()
            self._bind_fast_path()
        self.registry = _registry_default() if registry is _USE_DEFAULT else registry
        if self.registry is not None:
            self.registry.register(self)

    def _bind_fast_path(self) -> None:
        """Decide once: an instrument without labels forwards its operations straight to
        its one cell, unless a subclass overrides them (a custom metric)."""
        if self.label_names:
            return
        cell = self._children[()]
        for op in self._operations:
            if getattr(type(self), op) is getattr(_base_of(type(self)), op):
                setattr(self, op, getattr(cell, op))

    # -- series ----------------------------------------------------------------------------

    def _new_cell(self) -> Cell:
        raise NotImplementedError

    def labels(self, *values: Any, **names: Any) -> Any:
        """The series for these label values (positional in declaration order, or by name).

        Returns the cell to call: ``c.labels(method="GET").inc()``. Wrong labels are a
        programming mistake found where the cell is asked for, so this raises
        :class:`ValueError` (unlike the recording operations, which drop and count).
        """
        if values and names:
            raise ValueError(f"{self.name}: give label values by position or by name, not both")
        if names:
            if len(names) != len(self.label_names) or any(n not in names for n in self.label_names):
                raise ValueError(
                    f"{self.name}: expected labels {list(self.label_names)}, got {sorted(names)}"
                )
            key = tuple(str(names[n]) for n in self.label_names)
        else:
            if len(values) != len(self.label_names):
                raise ValueError(
                    f"{self.name}: expected {len(self.label_names)} label values "
                    f"{list(self.label_names)}, got {len(values)}"
                )
            key = tuple(map(str, values))
        return self._child(key)

    def _child(self, key: tuple[str, ...]) -> Any:
        cell = self._children.get(key)
        if cell is None:
            with self._lock:  # two threads asking for a new series at once get the same one
                cell = self._children.get(key)
                if cell is None:
                    if len(self._children) >= MAX_SERIES_PER_NAME:
                        return self._overflow(key)
                    cell = self._children[key] = self._new_cell()
        return cell

    def _overflow(self, key: tuple[str, ...]) -> Any:
        """A cell kept nowhere, for a label set past :data:`MAX_SERIES_PER_NAME`: label
        values made from unbounded data (ids, paths) must not grow memory and every scrape
        without end. What it records is dropped, counted (``series_overflow``) and logged
        once."""
        labels = dict(zip(self.label_names, key, strict=True))
        drops.drop(
            self.name,
            "series_overflow",
            f"more than {MAX_SERIES_PER_NAME} label sets; {labels!r} is not kept (use labels "
            "with few values)",
        )
        return self._new_cell()

    def _cell_for(self, label_values: Mapping[str, Any] | None) -> Any:
        """The cell for Phanos-style ``label_values``, or :data:`_DROPPED` when they do not
        match the declared labels (counted here, so the operation on it does nothing)."""
        names = self.label_names
        if not label_values:
            if not names:
                return self._children[()]
            key = None
        elif len(label_values) == len(names):
            try:
                key = tuple([str(label_values[n]) for n in names])
            except (KeyError, TypeError):
                key = None
        else:
            key = None
        if key is None:
            drops.drop(
                self.name,
                "labels",
                f"label values {dict(label_values or {})!r} do not match the declared "
                f"labels {list(names)}",
            )
            return _DROPPED
        cell = self._children.get(key)
        return cell if cell is not None else self._child(key)

    def _unlabeled(self, op: str, *args: Any) -> Any:
        """prometheus_client's helpers (``time()``, ``count_exceptions()`` …) on the
        instrument itself need it to have no labels; otherwise the helper records nothing
        (dropped and counted, as prometheus_client would raise)."""
        if not self.label_names:
            return getattr(self._children[()], op)(*args)
        drops.drop(
            self.name,
            "labels",
            f"{op}() on an instrument with labels {list(self.label_names)}; call it on "
            f".labels(...)",
        )
        return _prometheus.Guard(lambda: None, lambda _, __: None)

    def series(self) -> list[tuple[tuple[str, ...], Any]]:
        """Every series so far as (label values, cell), in creation order."""
        return list(self._children.items())

    def remove(self, *values: Any) -> None:
        """Forget one series (its label values in declaration order)."""
        with self._lock:
            self._children.pop(tuple(map(str, values)), None)

    def clear(self) -> None:
        """Forget every series (an instrument without labels keeps its one, reset)."""
        with self._lock:
            if self.label_names:
                self._children.clear()
            else:
                self._children[()].reset()

    def cleanup(self) -> None:
        """Called after the profiler handed a root call's records on (Phanos's hook for
        custom metrics); the base does nothing, state is kept for Prometheus."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, labels={list(self.label_names)})"


def _base_of(cls: type) -> type:
    """The jobtrace instrument class ``cls`` derives from (for custom metrics)."""
    for klass in cls.__mro__:
        if klass.__module__ == __name__ and klass is not Metric:
            return klass
    return cls


class Counter(Metric):
    """A total that only goes up: ``inc(value=1, label_values=None)``."""

    metric = "counter"
    _operations = ("inc",)

    def _new_cell(self) -> Cell:
        return CounterCell(self.name)

    def inc(
        self,
        value: float = 1.0,
        label_values: Mapping[str, str] | None = None,
        exemplar: Mapping[str, str] | None = None,
    ) -> None:
        self._cell_for(label_values).inc(value)

    def count_exceptions(self, exception: Any = Exception) -> Any:
        """prometheus_client's: a context manager and decorator counting the blocks or
        calls that raise ``exception`` (they still raise)."""
        return self._unlabeled("count_exceptions", exception)


class Gauge(Metric):
    """A value that goes up and down, with the mode that merges it across processes:
    ``sum`` (default), ``max``, ``min``, ``last`` or ``live-sum`` (only processes seen
    recently count, e.g. requests in flight)."""

    metric = "gauge"
    _operations = ("inc", "dec", "set", "set_to_current_time")

    def __init__(
        self,
        name: str,
        job: str = "",
        units: str = "",
        labels: Iterable[str] | None = None,
        logger: logging.Logger | None = None,
        *,
        mode: str = "sum",
        multiprocess_mode: str = "",
        **options: Any,
    ) -> None:
        if multiprocess_mode:
            if multiprocess_mode not in _prometheus.GAUGE_MODES:
                raise ConfigurationError(
                    f"gauge {name!r}: unknown multiprocess_mode {multiprocess_mode!r}; use one "
                    f"of {', '.join(_prometheus.GAUGE_MODES)} (or jobtrace's mode=)"
                )
            mode = _prometheus.GAUGE_MODES[multiprocess_mode]
        if mode not in GAUGE_MODES:
            raise ConfigurationError(
                f"gauge {name!r}: unknown mode {mode!r}; use one of {', '.join(GAUGE_MODES)}"
            )
        self.mode = mode
        super().__init__(name, job, units, labels, logger, **options)

    def _new_cell(self) -> Cell:
        return GaugeCell(self.name)

    def inc(self, value: float = 1.0, label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).inc(value)

    def dec(self, value: float = 1.0, label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).dec(value)

    def set(self, value: float, label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).set(value)

    def set_to_current_time(self, label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).set_to_current_time()

    def track_inprogress(self) -> Any:
        """prometheus_client's: raise the gauge while a block or call runs."""
        return self._unlabeled("track_inprogress")

    def time(self) -> Any:
        """prometheus_client's: set the gauge to the seconds a block or call took."""
        return self._unlabeled("time")

    def set_function(self, function: Any) -> None:
        """prometheus_client's: the gauge's value is ``function()``, called when read."""
        if self.label_names:
            self._unlabeled("set_function")
            return
        with self._lock:
            self._children[()] = FunctionGaugeCell(self.name, function)
        self._bind_fast_path()


class Histogram(Metric):
    """Observations counted in buckets (upper bounds, ``le``), plus their sum."""

    metric = "histogram"
    _reserved = ("le",)
    _operations = ("observe",)

    def __init__(
        self,
        name: str,
        job: str = "",
        units: str = "",
        labels: Iterable[str] | None = None,
        logger: logging.Logger | None = None,
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        **options: Any,
    ) -> None:
        try:
            bounds = [float(b) for b in buckets]
        except (TypeError, ValueError):
            raise ConfigurationError(f"histogram {name!r}: buckets must be numbers") from None
        if bounds and bounds[-1] != math.inf:
            bounds.append(math.inf)
        if len(bounds) < 2 or any(math.isnan(b) for b in bounds) or bounds != sorted(set(bounds)):
            raise ConfigurationError(
                f"histogram {name!r}: buckets must be at least one increasing, distinct number "
                f"(+Inf is added), got {list(buckets)!r}"
            )
        self.buckets = tuple(bounds)
        super().__init__(name, job, units, labels, logger, **options)

    def _new_cell(self) -> Cell:
        return HistogramCell(self.name, self.buckets)

    def observe(
        self,
        value: float,
        label_values: Mapping[str, str] | None = None,
        exemplar: Mapping[str, str] | None = None,
    ) -> None:
        self._cell_for(label_values).observe(value)

    def time(self) -> Any:
        """prometheus_client's: observe the seconds a block or call took."""
        return self._unlabeled("time")


class Summary(Metric):
    """Count and sum of observations."""

    metric = "summary"
    _reserved = ("quantile",)
    _operations = ("observe",)

    def _new_cell(self) -> Cell:
        return SummaryCell(self.name)

    def observe(self, value: float, label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).observe(value)

    def time(self) -> Any:
        """prometheus_client's: observe the seconds a block or call took."""
        return self._unlabeled("time")


class Info(Metric):
    """Key-value facts about the target: ``info_({"version": "1.2"})`` (Phanos's name) or
    ``info(...)``. Across processes the newest writer wins."""

    metric = "info"
    _operations = ("info", "info_")

    def _new_cell(self) -> Cell:
        return InfoCell(self.name)

    def info(self, value: Mapping[str, Any], label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).info(value)

    info_ = info


class Enum(Metric):
    """One of a declared set of states: ``state("running")``. Across processes the newest
    writer wins. States keep their declaration order (a set is sorted)."""

    metric = "enum"
    _operations = ("state",)

    def __init__(
        self,
        name: str,
        job: str = "",
        *args: Any,
        states: Iterable[str] | None = None,
        **options: Any,
    ) -> None:
        # jobtrace's and Phanos's form: (name, job, states, units, labels, logger);
        # prometheus_client's: (name, documentation, labelnames, …, states=[...]).
        rest = list((*args, None, None, None, None)[:4])
        if states is None:
            states = rest.pop(0) or ()
        # Metric tells the two forms apart from these (units holds label names in
        # prometheus_client's form); they may come by keyword too.
        units = options.pop("units", rest[0] if rest[0] is not None else "")
        labels = options.pop("labels", rest[1])
        logger = options.pop("logger", rest[2])
        declared = tuple(sorted(states)) if isinstance(states, set | frozenset) else tuple(states)
        if not declared or not all(isinstance(s, str) and s for s in declared):
            raise ConfigurationError(
                f"enum {name!r}: declare its states, e.g. states=['starting', 'running']"
            )
        if len(set(declared)) != len(declared):
            raise ConfigurationError(f"enum {name!r}: duplicate states in {declared!r}")
        self.states = declared
        self._reserved = (name,)  # type: ignore[misc]  # the exposition labels each state with the enum's name
        super().__init__(name, job, units, labels, logger, **options)

    def _new_cell(self) -> Cell:
        return EnumCell(self.name, self.states)

    def state(self, value: str, label_values: Mapping[str, str] | None = None) -> None:
        self._cell_for(label_values).state(value)
