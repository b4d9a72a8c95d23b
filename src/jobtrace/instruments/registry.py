"""The process's instruments, and their state travelling to the store as ``series`` records.

Every instrument registers in a registry (:data:`REGISTRY` unless told otherwise). Once the
first instrument is registered there, a :class:`SeriesPublisher` hooks into the recorder:
on every flush tick, on the recorder's writer thread (never on a request's), it turns each
series that changed since the last tick into one :data:`jobtrace.model.SERIES` record, and
adds a heartbeat row for the process. The store keeps each (source, name, labels) row's
newest state; readers merge the sources (:mod:`jobtrace.instruments.merge`).

The *source* names one process's life: ``host:pid:start-ms``. A restarted worker, or a
child after ``fork``, is a new source whose counters start at zero (a forked child's cells
are reset, so nothing its parent counted is counted twice), and the retiring of dead
sources (:func:`jobtrace.store.series.retire_sources`) folds old sources away.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import orjson

from jobtrace import model
from jobtrace.errors import ConfigurationError
from jobtrace.instruments._cells import (
    CounterCell,
    EnumCell,
    GaugeCell,
    HistogramCell,
    InfoCell,
    SummaryCell,
)
from jobtrace.instruments.kinds import Counter, Gauge, Histogram, Metric, Summary

__all__ = [
    "REGISTRY",
    "SOURCE_SERIES",
    "InstrumentRegistry",
    "SeriesPublisher",
    "SeriesRow",
    "encode_labels",
    "process_source",
    "publish",
]

log = logging.getLogger("jobtrace.instruments")

#: Name of the per-process heartbeat row: its ``updated_at`` says when the source was last
#: seen alive (``live-sum`` gauges count only live sources), ``data.final`` that it ended.
SOURCE_SERIES: Final = "jobtrace_source"
SOURCE_TYPE: Final = "source"


class SeriesRow(NamedTuple):
    """One source's state of one series: the ``series`` table's row, value decoded."""

    source: str
    name: str
    type: str
    mode: str | None
    labels: str
    value: float | None
    data: Any
    updated_at: float


def encode_labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """The canonical text of a label set (sorted JSON object): the ``labels`` key column."""
    if not names:
        return "{}"
    return orjson.dumps(dict(zip(names, values, strict=True)), option=orjson.OPT_SORT_KEYS).decode()


def _new_source() -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{time.time_ns() // 1_000_000}"


_source = _new_source()


def process_source() -> str:
    """This process's source id, ``host:pid:start-ms`` (new after ``fork``)."""
    return _source


def _type_of(metric: Metric) -> str:
    return metric.metric


def _cell_row(metric: Metric, cell: Any) -> tuple[float | None, dict[str, Any]]:
    """(value, data) of one cell, as the ``series`` table holds them."""
    help_text = {"help": metric.documentation} if metric.documentation != metric.name else {}
    if isinstance(cell, CounterCell):
        return cell.value, {**help_text, "created": cell.created}
    if isinstance(cell, GaugeCell):
        return cell.value, help_text
    if isinstance(cell, HistogramCell):
        cumulative, total = [], 0
        for count in list(cell.counts):  # one atomic copy, then no race with observe()
            total += count
            cumulative.append(total)
        bounds = [model.encode_float(b) for b in cell.bounds]
        return cell.sum, {**help_text, "le": bounds, "cum": cumulative, "created": cell.created}
    if isinstance(cell, SummaryCell):
        count, total_sum = cell.count, cell.sum
        return total_sum, {**help_text, "count": count, "created": cell.created}
    if isinstance(cell, InfoCell):
        return None, {**help_text, "info": cell.value}
    if isinstance(cell, EnumCell):
        return None, {**help_text, "states": list(cell.states), "state": cell.current}
    raise TypeError(f"unknown cell type {type(cell).__name__}")


def _fingerprint(cell: Any) -> Any:
    """Something equal between two ticks only if the cell did not change in between."""
    if isinstance(cell, CounterCell | GaugeCell):
        return cell.value
    if isinstance(cell, HistogramCell):
        return cell.sum, tuple(cell.counts)
    if isinstance(cell, SummaryCell):
        return cell.count, cell.sum
    if isinstance(cell, InfoCell):
        return cell.value  # replaced, never edited: identity changes with every info()
    if isinstance(cell, EnumCell):
        return cell.index
    return None


class InstrumentRegistry:
    """A set of instruments by name (prometheus_client's ``CollectorRegistry`` role)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric] = {}
        self.on_first_register: Any = None

    def register(self, metric: Metric) -> None:
        """Add ``metric``; a second instrument with the same name is a clear error."""
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is not None and existing is not metric:
                raise ConfigurationError(
                    f"an instrument named {metric.name!r} is already registered "
                    f"({existing!r}); reuse it, unregister it first, or pass registry=None"
                )
            first = not self._metrics
            self._metrics[metric.name] = metric
        if first and self.on_first_register is not None:
            self.on_first_register()

    def unregister(self, metric: Metric | str) -> None:
        name = metric if isinstance(metric, str) else metric.name
        with self._lock:
            self._metrics.pop(name, None)

    def get(self, name: str) -> Metric | None:
        return self._metrics.get(name)

    def metrics(self) -> list[Metric]:
        with self._lock:
            return list(self._metrics.values())

    def clear(self) -> None:
        """Unregister everything (tests)."""
        with self._lock:
            self._metrics.clear()

    def cells(self) -> Iterator[tuple[Metric, str, Any]]:
        """Every series: (instrument, canonical labels text, cell)."""
        for metric in self.metrics():
            for values, cell in metric.series():
                yield metric, encode_labels(metric.label_names, values), cell

    def rows(self, source: str | None = None, now: float | None = None) -> list[SeriesRow]:
        """Every series of this registry as :class:`SeriesRow` (what the Collector renders)."""
        source = source or _source
        now = time.time() if now is None else now
        rows = []
        for metric, labels, cell in self.cells():
            value, data = _cell_row(metric, cell)
            mode = metric.mode if isinstance(metric, Gauge) else None
            kind = _type_of(metric)
            rows.append(SeriesRow(source, metric.name, kind, mode, labels, value, data, now))
        return rows

    def reset_after_fork(self) -> None:
        """A forked child is a new source: its accumulating series start from zero."""
        for metric in self.metrics():
            if isinstance(metric, Counter | Histogram | Summary) or (
                isinstance(metric, Gauge) and metric.mode in ("sum", "live-sum")
            ):
                for _, cell in metric.series():
                    cell.reset()


class SeriesPublisher:
    """Sends the registry's changed series through the recorder on every flush tick."""

    def __init__(self, registry: InstrumentRegistry) -> None:
        self.registry = registry
        # id(cell) -> (cell, fingerprint): the cell is kept so its id is never reused.
        self._sent: dict[int, tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self._installed = False
        self.started = time.time()

    def changed_records(self, now: float, *, final: bool = False) -> list[model.Record]:
        """SERIES records for every series changed since the last call, plus a heartbeat."""
        source = _source
        records: list[model.Record] = []
        with self._lock:  # the writer thread's tick and an explicit publish() may race
            sent = self._sent
            seen = 0
            for metric, labels, cell in self.registry.cells():
                seen += 1
                fingerprint = _fingerprint(cell)
                previous = sent.get(id(cell))
                if previous is not None and previous[1] == fingerprint:
                    continue
                sent[id(cell)] = (cell, fingerprint)
                value, data = _cell_row(metric, cell)
                mode = metric.mode if isinstance(metric, Gauge) else None
                records.append(
                    (model.SERIES, source, None, metric.name, _type_of(metric), mode,
                     labels, value, data, now)
                )  # fmt: skip
            if len(sent) > seen:  # series were removed: forget their cells
                live = {id(cell) for _, _, cell in self.registry.cells()}
                for key in [k for k in sent if k not in live]:
                    del sent[key]
            heartbeat = {"host": os.uname().nodename, "pid": os.getpid()}
            if final:
                heartbeat["final"] = True
            records.append(
                (model.SERIES, source, None, SOURCE_SERIES, SOURCE_TYPE, None, "{}",
                 self.started, heartbeat, now)
            )  # fmt: skip
        return records

    def tick(self, now: float, *, final: bool = False) -> None:
        from jobtrace.recorder import get_recorder

        recorder = get_recorder()
        # Control records are never dropped: a dropped row would stay stale until the
        # series changed again, as it is already marked as sent.
        for record in self.changed_records(now, final=final):
            recorder.record_control(record)

    def install(self) -> None:
        """Tick with the recorder from now on, and once more at exit or SIGTERM."""
        with self._lock:
            if self._installed:
                return
            self._installed = True
        from jobtrace.recorder import get_recorder

        recorder = get_recorder()
        recorder.add_ticker(self.tick)
        recorder.add_terminate_listener(self._on_terminate)
        # Registered after the recorder's own exit hook, so it runs first (LIFO): the final
        # rows are buffered before the recorder's last flush.
        atexit.register(_final_tick, weakref.ref(self))

    def uninstall(self) -> None:
        from jobtrace.recorder import get_recorder

        recorder = get_recorder()
        recorder.remove_ticker(self.tick)
        recorder.remove_terminate_listener(self._on_terminate)
        with self._lock:
            self._installed = False
            self._sent.clear()

    def _on_terminate(self, signum: int, fatal: bool) -> None:
        self.tick(time.time(), final=fatal)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._sent = {}
        self.started = time.time()


def _final_tick(ref: weakref.ref[SeriesPublisher]) -> None:
    publisher = ref()
    if publisher is not None and publisher._installed and os.getpid() == _pid[0]:
        try:
            publisher.tick(time.time(), final=True)
        except Exception:
            log.exception("jobtrace: final instrument snapshot failed")


#: The default registry: every instrument goes here unless given ``registry=``.
REGISTRY = InstrumentRegistry()
_publisher = SeriesPublisher(REGISTRY)
REGISTRY.on_first_register = _publisher.install
_pid = [os.getpid()]


def publish(registry: InstrumentRegistry | None = None, *, final: bool = False) -> None:
    """Send the changed series now rather than at the next tick (then ``jobtrace.flush()``
    writes them). For another registry than the default, every series is sent.

    ``final=True`` also says this process is done: readers stop counting its ``live-sum``
    gauges and the store folds it away at once. A server's shutdown hook is the place
    (uvicorn's workers, for one, die by a re-raised SIGTERM after a graceful shutdown, so
    no exit hook of theirs runs)::

        @asynccontextmanager
        async def lifespan(app):
            yield
            jobtrace.instruments.publish(final=True)
            jobtrace.flush()
    """
    if registry is None or registry is REGISTRY:
        _publisher.tick(time.time(), final=final)
        return
    SeriesPublisher(registry).tick(time.time(), final=final)


def shutdown_flush(*, only_if_recording: bool = False) -> bool:
    """What a server worker does as it shuts down gracefully (an ASGI lifespan's
    shutdown, see :class:`jobtrace.tracing.ASGIMiddleware`): its instruments' last series,
    marked final, and every record still buffered (the last requests' spans), written now.

    uvicorn's workers die by a SIGTERM re-raised after the shutdown, under the handlers it
    restores, so neither the recorder's SIGTERM flush nor an exit hook can be counted on
    there. ``only_if_recording``: do nothing in a process that never recorded (no
    recorder is created just to flush it). Never raises; False if the sink did not take
    everything in time (the rest is spooled, as at any exit).
    """
    from jobtrace import recorder

    if only_if_recording and recorder._recorder is None:
        return True
    try:
        if _publisher._installed:
            _publisher.tick(time.time(), final=True)
        return recorder.flush()
    except Exception:
        log.exception("jobtrace: the shutdown flush failed")
        return False


def default_publisher() -> SeriesPublisher:
    return _publisher


def _after_fork_in_child() -> None:
    global _source
    _source = _new_source()
    _pid[0] = os.getpid()
    _publisher.after_fork()
    REGISTRY.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
