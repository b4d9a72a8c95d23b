"""The hot path of every instrument: one small "cell" per labelled series.

A cell holds one series' state and does one operation per call. This module is the
reference implementation, kept small and flat (``__slots__``, no per-call allocation, no
dict building) so that a compiled version can replace these classes one for one, as
``jobtrace._speedups`` replaces :class:`jobtrace.tracing.spans.Span`.

Thread safety without a lock. On CPython with the GIL, another thread can only run at the
interpreter's "eval breaker" checks: function entry, backward jumps and calls. The critical
sections below (``self.value += amount``, ``counts[i] += 1``) are attribute and item loads,
an ``int``/``float`` addition and a store, with no call and no jump in between, and
neither an int nor a float addition can run Python code, allocate a GC-tracked object (so
no collection, no finalizer) or release the GIL. So an update is never lost, and the tests
hammer one cell from many threads with a tiny switch interval to keep it so. Each fast path
therefore admits exact ``int`` and ``float`` values only; anything else (a ``Decimal``, a
numpy scalar, a bool) is converted to ``float`` on the slow path first, where the
conversion may run Python code before, not inside, the critical section. On an interpreter
without a GIL (free-threaded builds) every cell class is swapped for a locked subclass,
decided once at import: see :data:`LOCKED`.

Mistakes while recording (a negative counter increment, NaN, an unknown Enum state, label
values passed to a cell that has its labels already) never raise: the value is dropped,
counted in :data:`drops` and logged once per instrument and kind of mistake.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any, ClassVar

log = logging.getLogger("jobtrace.instruments")

#: True when there is no GIL to make the lock-free cells safe: locked cells are used then.
LOCKED: bool = not getattr(sys, "_is_gil_enabled", lambda: True)()


class DropCounter:
    """Counts values dropped while recording, by reason; logs the first of each kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_reason: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def drop(self, name: str, reason: str, detail: str) -> None:
        with self._lock:
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            first = (name, reason) not in self._logged
            if first:
                self._logged.add((name, reason))
        if first:
            log.warning(
                "jobtrace: instrument %r dropped a value: %s; further ones are counted only",
                name,
                detail,
            )

    def reset(self) -> None:
        with self._lock:
            self.by_reason.clear()
            self._logged.clear()


#: Every dropped value of the process, by reason ("negative", "labels", "state", …).
drops = DropCounter()


def _as_float(name: str, value: Any) -> float | None:
    """``value`` as a float for the slow paths, or None (dropped and counted) if it is not
    a finite-or-infinite real number."""
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        drops.drop(name, "type", f"{value!r} is not a number")
        return None
    if math.isnan(result):
        drops.drop(name, "nan", "NaN cannot be recorded")
        return None
    return result


def _too_large(name: str, value: Any) -> None:
    # An int beyond a float's range: adding it to a float raises OverflowError, which must
    # not reach the caller. Caught where it happens, after the fast path's type test, so
    # the common case pays nothing (a try block is free in CPython 3.11+).
    drops.drop(name, "type", f"{value!r} is too large for a float")


def _unexpected_labels(name: str, label_values: Any) -> None:
    drops.drop(
        name,
        "labels",
        f"label values {label_values!r} given to a series whose labels are already bound "
        "(or to an instrument declared without labels)",
    )


class Cell:
    """Base of all cells: the series' instrument name, for drop messages."""

    __slots__ = ("name",)
    kind: ClassVar[str] = ""

    def __init__(self, name: str) -> None:
        self.name = name

    def reset(self) -> None:
        """Back to the initial state (after ``fork``: the child is a new source)."""


class CounterCell(Cell):
    """A monotonic total. ``inc(amount=1)``; negative or NaN amounts are dropped."""

    __slots__ = ("created", "value")
    kind = "counter"

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: float = 0.0
        self.created = time.time()

    def inc(
        self,
        amount: float = 1.0,
        label_values: Mapping[str, str] | None = None,
        exemplar: Mapping[str, str] | None = None,
    ) -> None:
        t = type(amount)
        if (t is int or t is float) and amount >= 0 and label_values is None:
            try:
                self.value += amount  # atomic under the GIL: see the module docstring
            except OverflowError:
                _too_large(self.name, amount)
            return
        self._inc_slow(amount, label_values)

    def _inc_slow(self, amount: Any, label_values: Mapping[str, str] | None) -> None:
        # A mapping here is prometheus_client's positional exemplar (c.inc(1, {"trace_id":
        # ...})): the value counts; exemplars are not kept.
        value = _as_float(self.name, amount)
        if value is None:
            return
        if value < 0:
            drops.drop(self.name, "negative", f"a counter cannot decrease (inc({amount!r}))")
            return
        self.value += value

    def reset(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def count_exceptions(self, exception: Any = Exception) -> Any:
        """prometheus_client's: count the blocks or calls that raise ``exception``."""
        from jobtrace.instruments._prometheus import exception_counter

        return exception_counter(self.inc, exception)


class GaugeCell(Cell):
    """A value that goes up and down: ``inc``, ``dec``, ``set``, ``set_to_current_time``."""

    __slots__ = ("value",)
    kind = "gauge"

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: float = 0.0

    def inc(self, amount: float = 1.0, label_values: Mapping[str, str] | None = None) -> None:
        t = type(amount)
        if (t is int or t is float) and amount == amount and label_values is None:
            try:
                self.value += amount
            except OverflowError:
                _too_large(self.name, amount)
            return
        self._add_slow(amount, label_values, 1.0)

    def dec(self, amount: float = 1.0, label_values: Mapping[str, str] | None = None) -> None:
        t = type(amount)
        if (t is int or t is float) and amount == amount and label_values is None:
            try:
                self.value -= amount
            except OverflowError:
                _too_large(self.name, amount)
            return
        self._add_slow(amount, label_values, -1.0)

    def set(self, value: float, label_values: Mapping[str, str] | None = None) -> None:
        t: type[Any] = type(value)  # an int too, whatever the annotation says
        if t is float and value == value and label_values is None:
            self.value = value
            return
        if t is int and label_values is None:
            # Stored as a float, as every other operation leaves it: a huge int kept as it
            # is would make a later inc() or the snapshot raise instead.
            try:
                self.value = float(value)
            except OverflowError:
                _too_large(self.name, value)
            return
        if label_values:
            _unexpected_labels(self.name, label_values)
            return
        checked = _as_float(self.name, value)
        if checked is not None:
            self.value = checked

    def set_to_current_time(self) -> None:
        self.value = time.time()

    def _add_slow(self, amount: Any, label_values: Mapping[str, str] | None, sign: float) -> None:
        if label_values:
            _unexpected_labels(self.name, label_values)
            return
        value = _as_float(self.name, amount)
        if value is not None:
            self.value += sign * value

    def reset(self) -> None:
        self.value = 0.0

    def track_inprogress(self) -> Any:
        """prometheus_client's: raise the gauge while a block or call runs."""
        from jobtrace.instruments._prometheus import in_progress

        return in_progress(self.inc, self.dec)

    def time(self) -> Any:
        """prometheus_client's: set the gauge to the seconds a block or call took."""
        from jobtrace.instruments._prometheus import timer

        return timer(self.set)


class FunctionGaugeCell(GaugeCell):
    """A gauge whose value is a function's result, read when the series is (Gauge's
    ``set_function``). A function that raises reads as NaN, logged once."""

    __slots__ = ("function",)

    def __init__(self, name: str, function: Any) -> None:
        self.name = name
        self.function = function

    @property
    def value(self) -> float:
        try:
            return float(self.function())
        except Exception:
            drops.drop(self.name, "function", "its set_function() function raised")
            return math.nan

    @value.setter
    def value(self, _: float) -> None:
        """Writes are ignored: the function decides the value."""


class HistogramCell(Cell):
    """Counts observations per bucket (``counts[i]`` for ``bounds[i-1] < v <= bounds[i]``,
    the last bound being +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "created", "sum")
    kind = "histogram"

    def __init__(self, name: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.bounds = bounds
        self.counts: list[int] = [0] * len(bounds)
        self.sum: float = 0.0
        self.created = time.time()

    def observe(
        self,
        value: float,
        label_values: Mapping[str, str] | None = None,
        exemplar: Mapping[str, str] | None = None,
    ) -> None:
        t = type(value)
        if (t is float or t is int) and value == value and label_values is None:
            i = bisect_left(self.bounds, value)  # the call comes before the critical section
            try:
                self.sum += value  # first: if it raises, nothing was counted
            except OverflowError:
                _too_large(self.name, value)
                return
            self.counts[i] += 1
            return
        self._observe_slow(value, label_values)

    def _observe_slow(self, value: Any, label_values: Mapping[str, str] | None) -> None:
        # A mapping here is prometheus_client's positional exemplar (h.observe(4.7,
        # {"trace_id": ...})): the value counts; exemplars are not kept.
        checked = _as_float(self.name, value)
        if checked is not None:
            i = bisect_left(self.bounds, checked)
            self.counts[i] += 1
            self.sum += checked

    @property
    def count(self) -> int:
        return sum(self.counts)

    def reset(self) -> None:
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def time(self) -> Any:
        """prometheus_client's: observe the seconds a block or call took."""
        from jobtrace.instruments._prometheus import timer

        return timer(self.observe)


class SummaryCell(Cell):
    """Count and sum of observations (prometheus_client's Summary: no quantiles)."""

    __slots__ = ("count", "created", "sum")
    kind = "summary"

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.sum: float = 0.0
        self.created = time.time()

    def observe(self, value: float, label_values: Mapping[str, str] | None = None) -> None:
        t = type(value)
        if (t is float or t is int) and value == value and label_values is None:
            try:
                self.sum += value  # first: if it raises, nothing was counted
            except OverflowError:
                _too_large(self.name, value)
                return
            self.count += 1
            return
        if label_values:
            _unexpected_labels(self.name, label_values)
            return
        checked = _as_float(self.name, value)
        if checked is not None:
            self.count += 1
            self.sum += checked

    def reset(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.created = time.time()

    def time(self) -> Any:
        """prometheus_client's: observe the seconds a block or call took."""
        from jobtrace.instruments._prometheus import timer

        return timer(self.observe)


class InfoCell(Cell):
    """Key-value information; the whole dict is replaced at once (one atomic store)."""

    __slots__ = ("value",)
    kind = "info"

    def __init__(self, name: str) -> None:
        self.name = name
        self.value: dict[str, str] = {}

    def info(self, value: Any, label_values: Mapping[str, str] | None = None) -> None:
        if label_values:
            _unexpected_labels(self.name, label_values)
            return
        if not isinstance(value, Mapping):
            drops.drop(self.name, "type", f"info must be a dict, got {type(value).__name__}")
            return
        self.value = {str(k): str(v) for k, v in value.items()}

    info_ = info  # Phanos's name for the operation


class EnumCell(Cell):
    """One of the declared states; an unknown state is dropped and counted."""

    __slots__ = ("index", "states")
    kind = "enum"

    def __init__(self, name: str, states: tuple[str, ...]) -> None:
        self.name = name
        self.states = states
        self.index = 0

    def state(self, value: str, label_values: Mapping[str, str] | None = None) -> None:
        if label_values:
            _unexpected_labels(self.name, label_values)
            return
        try:
            self.index = self.states.index(value)
        except ValueError:
            drops.drop(
                self.name,
                "state",
                f"unknown state {value!r}; declared states: {', '.join(self.states)}",
            )

    @property
    def current(self) -> str:
        return self.states[self.index]

    def reset(self) -> None:
        self.index = 0


def _locked(cls: type[Any], methods: tuple[str, ...]) -> type[Any]:
    """A subclass of ``cls`` whose ``methods`` run under one lock per cell."""

    def wrap(name: str) -> Any:
        plain = getattr(cls, name)

        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return plain(self, *args, **kwargs)

        method.__name__ = name
        return method

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        cls.__init__(self, *args, **kwargs)

    namespace: dict[str, Any] = {"__slots__": ("_lock",), "__init__": __init__}
    namespace.update({name: wrap(name) for name in methods})
    return type(f"Locked{cls.__name__}", (cls,), namespace)


if LOCKED:  # pragma: no cover - free-threaded interpreters only
    CounterCell = _locked(CounterCell, ("inc", "reset"))  # type: ignore[misc]
    GaugeCell = _locked(GaugeCell, ("inc", "dec", "set", "reset"))  # type: ignore[misc]
    HistogramCell = _locked(HistogramCell, ("observe", "reset"))  # type: ignore[misc]
    SummaryCell = _locked(SummaryCell, ("observe", "reset"))  # type: ignore[misc]
