"""Series in Prometheus's formats, through prometheus_client's own metric families and
exposition code: the in-process :class:`InstrumentCollector`, and :func:`render` for merged
series from any number of processes (what a ``/metrics`` endpoint serves).

>>> from prometheus_client import REGISTRY, start_http_server         # doctest: +SKIP
>>> REGISTRY.register(jobtrace.instruments.InstrumentCollector())       # doctest: +SKIP

prometheus_client is imported here only (the ``prometheus`` extra), never by recording.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from jobtrace import model
from jobtrace.instruments.merge import DEFAULT_LIVE_WINDOW, MergedSeries, merge_series
from jobtrace.instruments.registry import REGISTRY, InstrumentRegistry

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as PromMetric

__all__ = ["InstrumentCollector", "families", "render", "render_families"]


def _labels(text: str) -> dict[str, str]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


@functools.lru_cache(maxsize=1024)  # a scrape writes the same few bounds thousands of times
def _bound_text(bound: float | str) -> str:
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(model.decode_float(bound)))  # type: ignore[no-untyped-call]


def _add(family: Any, kind: str, values: list[str], series: MergedSeries) -> None:
    data = series.data if isinstance(series.data, dict) else {}
    value = 0.0 if series.value is None else series.value
    created = data.get("created")
    if kind == "counter":
        family.add_metric(values, value, created=created)
    elif kind == "gauge":
        family.add_metric(values, value)
    elif kind == "histogram":
        pairs = zip(data.get("le", ()), data.get("cum", ()), strict=False)
        buckets = [(_bound_text(b), float(c)) for b, c in pairs]
        family.add_metric(values, buckets, value)
    elif kind == "summary":
        family.add_metric(values, int(data.get("count", 0)), value)
    elif kind == "info":
        family.add_metric(values, {str(k): str(v) for k, v in dict(data.get("info", {})).items()})
    elif kind == "enum":
        state = data.get("state")
        family.add_metric(values, {str(s): s == state for s in data.get("states", ())})


def families(merged: Iterable[MergedSeries]) -> list[PromMetric]:
    """prometheus_client metric families for merged series (one family per name)."""
    from prometheus_client import core

    makers: dict[str, Any] = {
        "counter": core.CounterMetricFamily,
        "gauge": core.GaugeMetricFamily,
        "histogram": core.HistogramMetricFamily,
        "summary": core.SummaryMetricFamily,
        "info": core.InfoMetricFamily,
        "enum": core.StateSetMetricFamily,
    }
    by_name: dict[str, list[MergedSeries]] = {}
    for series in merged:
        if series.type in makers:
            by_name.setdefault(series.name, []).append(series)
    out = []
    for name, named in by_name.items():
        kind = named[0].type
        group = [s for s in named if s.type == kind]  # merge_series already resolved kinds
        parsed = [_labels(s.labels) for s in group]
        # One family needs one set of label names: the union, missing values left empty.
        names = sorted({k for labels in parsed for k in labels})
        newest = max(group, key=lambda s: s.updated_at)
        data = newest.data if isinstance(newest.data, dict) else {}
        family = makers[kind](name, str(data.get("help") or name), labels=names)
        for series, labels in zip(group, parsed, strict=True):
            _add(family, kind, [labels.get(n, "") for n in names], series)
        out.append(family)
    return out


class _Families:
    """A one-shot collector over ready-made families (for :func:`render`)."""

    def __init__(self, items: list[PromMetric]) -> None:
        self._items = items

    def collect(self) -> Iterator[PromMetric]:
        return iter(self._items)

    def describe(self) -> list[PromMetric]:
        return []


def render(merged: Iterable[MergedSeries], *, openmetrics: bool = False) -> bytes:
    """Prometheus text (or OpenMetrics) for merged series, by prometheus_client's writer."""
    return render_families(families(merged), openmetrics=openmetrics)


def render_families(items: list[PromMetric], *, openmetrics: bool = False) -> bytes:
    """Prometheus text (or OpenMetrics, with its ``# EOF``) for ready-made families."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(items))
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest as generate_om

        return bytes(generate_om(registry))  # type: ignore[no-untyped-call]
    return bytes(generate_latest(registry))


class InstrumentCollector:
    """A prometheus_client collector exposing this process's instruments, e.g. for
    ``prometheus_client.start_http_server`` in a single service. Renders through the same
    merge and families as the server's ``/metrics`` does for many processes."""

    def __init__(
        self,
        registry: InstrumentRegistry | None = None,
        *,
        live_window: float = DEFAULT_LIVE_WINDOW,
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        self.live_window = live_window

    def collect(self) -> Iterator[PromMetric]:
        now = time.time()
        merged = merge_series(self.registry.rows(now=now), now=now, live_window=self.live_window)
        return iter(families(merged))

    def describe(self) -> list[PromMetric]:
        # Empty: no registration-time collect, and no name clash checks against metrics
        # that prometheus_client itself holds.
        return []
